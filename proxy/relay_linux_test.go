package proxy

import (
	"io"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/splice"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// TestBulkSplicesBothWays: a client that came as a kernel socket (wrapped
// in stream.TCP) is spliced in both directions, not copied through a
// buffer that an idle tunnel would hold. Seen from outside: with both
// receivers stalled, each direction holds a pipe with its bytes in it
// (the kernel's FIONREAD; both ends of a pipe count).
func TestBulkSplicesBothWays(t *testing.T) {
	client, proxyClient := testnet.Pair(t)
	proxyServer, server := testnet.Pair(t)
	lim := config.Default().Limits
	lim.HelloTimeout = 50 * time.Millisecond // no hello: both ways go to bulk at once
	start := time.Now()
	r := newRelay(stream.TCP{TCPConn: proxyClient}, proxyServer, tlsinfo.NewTracker(0), lim,
		func() time.Duration { return time.Since(start) }, func(any, func()) func() { return func() {} }, &timing.Close{}, &splice.Pool{})
	done := make(chan struct{})
	go func() { r.run(nil, false); close(done) }()
	time.Sleep(100 * time.Millisecond)
	const size = 16 << 20 // far more than two sockets' buffers hold
	for _, c := range []interface{ Write([]byte) (int, error) }{client, server} {
		go func() { _, _ = c.Write(make([]byte, size)) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for testnet.FullPipeFDs(t) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pipe descriptors hold bytes, want 4 (two pipes): a direction is not spliced", testnet.FullPipeFDs(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []io.Reader{client, server} {
		go func() { _, _ = io.CopyN(io.Discard, c, size) }()
	}
	deadline = time.Now().Add(10 * time.Second)
	for r.bytes[tlsinfo.ClientToServer].Load() < size || r.bytes[tlsinfo.ServerToClient].Load() < size {
		if time.Now().After(deadline) {
			t.Fatalf("relayed %d up and %d down of %d each", r.bytes[tlsinfo.ClientToServer].Load(), r.bytes[tlsinfo.ServerToClient].Load(), size)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = client.CloseWrite()
	_ = server.CloseWrite()
	<-done
}
