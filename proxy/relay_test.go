package proxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/splice"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// serverSendsAndCloses is issue 9's server: accept, read, send 5000 B,
// close() (not a half-close: later data gets an RST from its kernel).
func serverSendsAndCloses(t *testing.T) string {
	return tcpServer(t, func(c *net.TCPConn) {
		buf := make([]byte, 100)
		_, _ = io.ReadFull(c, buf)
		_, _ = c.Write(make([]byte, 5000))
		_ = c.Close()
	})
}

// Issue 9, findings 1 and 2: data the client sends after the server
// closed is answered by the server's kernel with an RST. The client must
// see it too, and the event must blame the server, with the cause.
func TestResetAfterServerClose(t *testing.T) {
	h := startProxy(t, nil)
	for _, second := range []bool{false, true} {
		c := h.connect(serverSendsAndCloses(t))
		_, _ = c.Write(make([]byte, 100))
		if n, err := io.Copy(io.Discard, c); n != 5000 || err != nil {
			t.Fatalf("read %d, %v", n, err)
		}
		time.Sleep(30 * time.Millisecond)
		_, _ = c.Write(make([]byte, 40))
		time.Sleep(20 * time.Millisecond)
		var err error
		if second {
			_, err = c.Write(make([]byte, 40))
		} else {
			err = c.CloseWrite()
		}
		// The reset reaches the client: its next operation fails.
		time.Sleep(20 * time.Millisecond)
		if err == nil {
			_, err = c.Write(make([]byte, 1))
		}
		if err == nil {
			t.Errorf("second=%v: the client never saw the server's reset", second)
		}
		c.Close()
		tcp := h.event().TCP
		if tcp.RST != event.SideServer || tcp.RSTCause != "data_after_close" || tcp.FirstFIN != event.SideServer {
			t.Errorf("second=%v: rst=%q cause=%q first_fin=%q history=%q", second, tcp.RST, tcp.RSTCause, tcp.FirstFIN, tcp.History)
		}
		if !strings.Contains(tcp.History, "f") || !strings.Contains(tcp.History, "r") || strings.Contains(tcp.History, "R") {
			t.Errorf("second=%v: history %q should have the server's FIN and RST, and no client RST", second, tcp.History)
		}
	}
}

// Issue 9, finding 3, the mirror: the client closed; data the server sends
// after that makes the client's kernel reset, which the event records and
// the server sees.
func TestResetAfterClientClose(t *testing.T) {
	h := startProxy(t, nil)
	serverErr := make(chan error, 1)
	addr := tcpServer(t, func(c *net.TCPConn) {
		_, _ = io.ReadAll(c) // until the client's FIN
		time.Sleep(10 * time.Millisecond)
		_, _ = c.Write([]byte("too late"))
		time.Sleep(50 * time.Millisecond)
		_, err := c.Write([]byte("still?"))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		serverErr <- err
	})
	c := h.connect(addr)
	_, _ = c.Write([]byte("hello"))
	_ = c.SetLinger(-1)
	c.Close() // a full close: later data gets an RST
	tcp := h.event().TCP
	if tcp.RST != event.SideClient || tcp.RSTCause != "data_after_close" || tcp.FirstFIN != event.SideClient {
		t.Errorf("rst=%q cause=%q first_fin=%q history=%q", tcp.RST, tcp.RSTCause, tcp.FirstFIN, tcp.History)
	}
	if err := <-serverErr; err == nil {
		t.Error("the server never saw the client's reset")
	}
}

// Issue 9, finding 6: the proxy's own resets are recorded, with a cause.
func TestProxyResetsRecorded(t *testing.T) {
	h := startProxy(t, func(c *config.Config) { c.Limits.IdleTimeout = 200 * time.Millisecond })
	addr := tcpServer(t, func(c *net.TCPConn) {
		_, _ = io.Copy(c, c)
		time.Sleep(time.Second) // never FINs back within the half-close timeout
	})
	// idle
	c := h.connect(addr)
	echo(t, c, []byte("x"))
	_, err := io.ReadAll(c)
	if err == nil {
		t.Error("idle tunnel: the client should see a reset")
	}
	c.Close()
	tcp := h.event().TCP
	if tcp.RST != event.SideProxy || tcp.RSTCause != "proxy_idle_timeout" || tcp.Timeout != "idle" || !strings.Contains(tcp.History, "!") {
		t.Errorf("idle: rst=%q cause=%q timeout=%q history=%q", tcp.RST, tcp.RSTCause, tcp.Timeout, tcp.History)
	}
	// half-close: the client half-closes, the echo server never does.
	h = startProxy(t, func(c *config.Config) { c.Limits.HalfCloseTimeout = 200 * time.Millisecond })
	c = h.connect(addr)
	_ = c.CloseWrite()
	_, _ = io.ReadAll(c)
	c.Close()
	tcp = h.event().TCP
	if tcp.RST != event.SideProxy || tcp.RSTCause != "proxy_half_close_timeout" || tcp.FirstFIN != event.SideClient {
		t.Errorf("half-close: rst=%q cause=%q first_fin=%q", tcp.RST, tcp.RSTCause, tcp.FirstFIN)
	}
}

// Issue 9, finding 7: a tunnel's duration runs from the client's accept,
// like every other time in its event, so it is never below a FIN time.
func TestTunnelDurationFromAccept(t *testing.T) {
	h := startProxy(t, nil)
	addr := tcpServer(t, func(c *net.TCPConn) {
		time.Sleep(20 * time.Millisecond)
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	c := h.connect(addr)
	_, _ = io.ReadAll(c)
	_ = c.CloseWrite()
	c.Close()
	ev := h.event()
	tcp := ev.TCP
	if tcp.ServerFINMS == nil || tcp.ClientFINMS == nil || tcp.DialAtMS == nil {
		t.Fatalf("tcp %+v", tcp)
	}
	if tcp.DurationMS < *tcp.ServerFINMS || tcp.DurationMS < *tcp.ClientFINMS {
		t.Errorf("duration_ms %.3f below a FIN time (server %.3f, client %.3f)", tcp.DurationMS, *tcp.ServerFINMS, *tcp.ClientFINMS)
	}
	if life := ev.End.Sub(ev.Start); time.Duration(tcp.DurationMS*float64(time.Millisecond)) > life {
		t.Errorf("duration_ms %.3f longer than the event's start to end %v", tcp.DurationMS, life)
	}
	if tcp.History != "ShfF" && tcp.History != "ShFf" {
		t.Errorf("history %q, want ShfF (accept, connect, server FIN, client FIN)", tcp.History)
	}
}

// liveRecorder is a Live that keeps the phases it is told, in order.
type liveRecorder struct {
	mu     sync.Mutex
	phases []string
}

func (l *liveRecorder) Active() bool { return true }
func (l *liveRecorder) Publish(phase string, ev *event.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.phases = append(l.phases, phase)
}

// TestLivePhases: a stream's phases are published as they happen, in wire
// order, before its event is written.
func TestLivePhases(t *testing.T) {
	live := &liveRecorder{}
	h := startProxyWith(t, nil, Options{Live: live})
	srv := testpki.StartTLS(t, tlsServerConfig(h.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256})), nil)
	h.tlsThrough(srv.Addr, &tls.Config{ServerName: "localhost", RootCAs: h.ca.Pool})
	h.event()
	live.mu.Lock()
	defer live.mu.Unlock()
	want := "accepted connected client_hello server_hello handshake_done first_fin closed"
	if got := strings.Join(live.phases, " "); got != want {
		t.Errorf("phases %q, want %q", got, want)
	}
}

// Issue 9, finding 8: once the hello wait is over, inspection is over in
// both directions: the server's 4 MiB go in bulk (splice), not through
// the tracker chunk by chunk.
func TestHelloTimeoutSplicesBothWays(t *testing.T) {
	client, proxyClient := testnet.Pair(t) // the client and the proxy's end of it
	proxyServer, server := testnet.Pair(t) // the proxy's upstream and the server
	lim := config.Default().Limits
	lim.HelloTimeout = 50 * time.Millisecond
	start := time.Now()
	r := newRelay(stream.TCP{TCPConn: proxyClient}, proxyServer, tlsinfo.NewTracker(0), lim,
		func() time.Duration { return time.Since(start) }, func(any, func()) func() { return func() {} }, &timing.Close{}, &splice.Pool{})
	var feeds atomic.Int64
	r.fed = func() { feeds.Add(1) }
	done := make(chan struct{})
	go func() { r.run(nil, false); close(done) }()
	time.Sleep(100 * time.Millisecond) // the client says nothing: the hello wait ends
	// The server then sends a TLS 1.3 ServerHello and 4 MiB of encrypted
	// records, which a tracker still inspecting would follow chunk by
	// chunk, waiting for the client's Finished.
	records := append(serverHello13(), bytes.Repeat(append([]byte{0x17, 0x03, 0x03, 0x40, 0x00}, make([]byte, 1<<14)...), 256)...)
	go func() {
		_, _ = server.Write(records)
		_ = server.CloseWrite()
	}()
	if n, err := io.Copy(io.Discard, client); n != int64(len(records)) || err != nil {
		t.Fatalf("client read %d, %v", n, err)
	}
	_ = client.CloseWrite()
	_, _ = io.Copy(io.Discard, server)
	<-done
	// fed runs once per chunk inspected, and once at the first FIN: 4 MiB
	// read chunk by chunk would be over a hundred.
	if n := feeds.Load(); n > 2 {
		t.Errorf("fed %d times after the hello wait; want the one chunk already read and the first FIN", n)
	}
	if !r.helloWait.Load() {
		t.Error("hello wait not recorded")
	}
}

// serverHello13 is a TLS 1.3 ServerHello record (TLS_AES_128_GCM_SHA256,
// an X25519 key share) as RFC 8446 lays it out.
func serverHello13() []byte {
	exts := []byte{0x00, 0x2b, 0x00, 0x02, 0x03, 0x04, 0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20}
	exts = append(exts, make([]byte, 32)...)
	body := []byte{0x03, 0x03}
	body = append(body, make([]byte, 32)...)    // random
	body = append(body, 0x00, 0x13, 0x01, 0x00) // no session id, the suite, no compression
	body = append(body, byte(len(exts)>>8), byte(len(exts)))
	body = append(body, exts...)
	msg := append([]byte{0x02, 0x00, byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{0x16, 0x03, 0x03, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}
