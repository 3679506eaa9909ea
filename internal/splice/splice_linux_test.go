package splice

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/loopback"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/internal/wirecap"
)

// waitPipes waits up to 10 s for the pipe count to come down to want.
func waitPipes(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := testnet.PipeFDs(t)
		if got <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pipe descriptors open, want %d", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIdleTunnelHoldsNoPipe(t *testing.T) {
	base := testnet.PipeFDs(t)
	p := &Pool{IdleTimeout: 100 * time.Millisecond}
	tu := newTunnel(t, p, spliced)
	// Both directions splice a burst, then the tunnel goes quiet.
	for _, d := range []struct{ from, to *net.TCPConn }{{tu.client, tu.server}, {tu.server, tu.client}} {
		msg := bytes.Repeat([]byte("x"), 1<<20)
		go func() { _, _ = d.from.Write(msg) }()
		readN(t, d.to, len(msg))
	}
	// The counts came as the bytes went, not when Copy returns.
	for i, name := range []string{"up", "down"} {
		if got := tu.counted[i].Load(); got != 1<<20 {
			t.Errorf("%s: %d bytes counted while the tunnel is open, want %d", name, got, 1<<20)
		}
	}
	waitPipes(t, base)
	select {
	case r := <-tu.up:
		t.Fatalf("the idle tunnel's up direction ended: %v", r.err)
	case r := <-tu.down:
		t.Fatalf("the idle tunnel's down direction ended: %v", r.err)
	default:
	}
	// Still a tunnel: it carries bytes and a FIN after its idle time.
	tu.carried = [2]int64{1 << 20, 1 << 20}
	transfer(t, tu, 3<<20, 100, 64<<10, 0)
	waitPipes(t, base)
}

// TestPipeLeftOverIsClosed: when the destination fails with bytes in the
// pipe, the pipe is closed rather than lent again with stale bytes.
func TestPipeLeftOverIsClosed(t *testing.T) {
	base := testnet.PipeFDs(t)
	p := &Pool{IdleTimeout: 50 * time.Millisecond}
	tu := newTunnel(t, p, spliced)
	go flood(tu.client)
	time.Sleep(100 * time.Millisecond) // the server reads nothing: its socket, the relay's and the pipe fill up
	abort(tu.server)
	r := wait(t, tu.up, "up")
	var e *Error
	if !errors.As(r.err, &e) || e.Op != Write || e.Unsent <= 0 {
		t.Fatalf("Copy = %d, %v; want a write error with bytes left unsent", r.n, r.err)
	}
	tu.close()
	waitPipes(t, base)
}

// TestPoolBound runs a burst of transfers, some to slow readers that keep
// their pipes lent, through a pool of 8 pipes: the process never has more
// than 16 pipe descriptors beyond its own, every byte arrives, and the
// descriptors go back after the burst.
func TestPoolBound(t *testing.T) {
	const (
		transfers   = 2000
		concurrency = 100
		maxPipes    = 8
	)
	base := testnet.PipeFDs(t)
	p := &Pool{Max: maxPipes, Idle: 2, IdleTimeout: 100 * time.Millisecond}
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(testnet.PipeFDs(t)); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	jobs := make(chan int)
	errs := make(chan error, transfers)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				errs <- burstTransfer(p, i)
			}
		}()
	}
	for i := range transfers {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d transfers failed", failed, transfers)
	}
	if got := peak.Load() - int64(base); got > 2*maxPipes {
		t.Errorf("peak of %d pipe descriptors beyond the process's own; the pool's bound is %d", got, 2*maxPipes)
	}
	t.Logf("peak pipe descriptors during the burst: %d beyond the process's %d", peak.Load()-int64(base), base)
	waitPipes(t, base)
}

// burstTransfer is one tunnel: 40 KiB up, 96 KiB down, every 10th to a
// reader that takes its time, each checked by SHA-256 and Copy's counts.
func burstTransfer(p *Pool, i int) error {
	client, pc, err := loopback.Pair()
	if err != nil {
		return err
	}
	ps, server, err := loopback.Pair()
	if err != nil {
		client.Close()
		pc.Close()
		return err
	}
	defer func() {
		for _, c := range []*net.TCPConn{client, pc, ps, server} {
			c.Close()
		}
	}()
	up, down := make(chan result, 1), make(chan result, 1)
	relay := func(dst, src *net.TCPConn, out chan result) {
		n, err := p.Copy(dst, src)
		_ = dst.CloseWrite()
		out <- result{n, err}
	}
	go relay(ps, pc, up)
	go relay(pc, ps, down)
	slow := i%10 == 0
	type got struct {
		n   int64
		sum [32]byte
		err error
	}
	recv := func(c *net.TCPConn, out chan got) {
		h := sha256.New()
		var r io.Reader = c
		if slow {
			r = &slowReader{c}
		}
		n, err := io.Copy(h, r)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		out <- got{n, s, err}
	}
	gotUp, gotDown := make(chan got, 1), make(chan got, 1)
	go recv(server, gotUp)
	go recv(client, gotDown)
	sentDown := make(chan [32]byte, 1)
	go func() {
		s, _ := sender(server, uint64(i)<<1|1, 96<<10, 16<<10, 0)
		sentDown <- s
	}()
	sumUp, err := sender(client, uint64(i)<<1, 40<<10, 8<<10, 0)
	if err != nil {
		return fmt.Errorf("transfer %d: send: %w", i, err)
	}
	for _, d := range []struct {
		name string
		size int64
		sent [32]byte
		got  chan got
		res  chan result
	}{{"up", 40 << 10, sumUp, gotUp, up}, {"down", 96 << 10, <-sentDown, gotDown, down}} {
		g, r := <-d.got, <-d.res
		if g.err != nil || r.err != nil || g.n != d.size || g.sum != d.sent || r.n != d.size {
			return fmt.Errorf("transfer %d %s: received %d bytes (%v), sha256 match %v, Copy %d, %v; sent %d",
				i, d.name, g.n, g.err, g.sum == d.sent, r.n, r.err, d.size)
		}
	}
	return nil
}

type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	return s.r.Read(p[:min(len(p), 4<<10)])
}

// TestCountsMatchCapture checks Copy's counts against a packet capture of
// the relay's two legs: what Copy says it sent to the server and to the
// client is the TCP payload the capture saw leave the relay on each leg
// (sequence space, so a retransmission counts once).
func TestCountsMatchCapture(t *testing.T) {
	const up, down = 3<<20 + 17, 5<<20 + 3
	for _, w := range ways[:2] {
		t.Run(w.name, func(t *testing.T) {
			lnC, lnS := listen(t), listen(t)
			addrC := lnC.Addr().(*net.TCPAddr).AddrPort()
			addrS := lnS.Addr().(*net.TCPAddr).AddrPort()
			capture, err := wirecap.Start(wirecap.Config{Ports: []uint16{addrC.Port(), addrS.Port()}})
			if err != nil {
				t.Fatal(err)
			}

			tu := &tunnel{up: make(chan result, 1), down: make(chan result, 1)}
			tu.client, tu.pc = accepted(t, lnC)
			tu.ps, tu.server = accepted(t, lnS)
			tu.wg.Add(2)
			p := w.pool()
			for _, d := range []struct {
				dst, src *net.TCPConn
				out      chan result
				counted  *atomic.Int64
			}{{tu.ps, tu.pc, tu.up, &tu.counted[0]}, {tu.pc, tu.ps, tu.down, &tu.counted[1]}} {
				go func() {
					defer tu.wg.Done()
					n, err := w.copy(p, d.dst, d.src, func(n int64) { d.counted.Add(n) })
					if err == nil {
						_ = d.dst.CloseWrite()
					}
					d.out <- result{n, err}
				}()
			}
			t.Cleanup(tu.close)
			// Bursts both ways with pauses, so pipes come and go; transfer
			// checks that Copy counted what the receivers got.
			transfer(t, tu, up, down, 3000, 25)
			tu.close()
			trace, err := capture.Stop()
			if err != nil {
				t.Fatal(err)
			}
			toServer, toClient := int64(-1), int64(-1)
			if cs := trace.ConnTo(addrS); len(cs) == 1 {
				toServer = cs[0].Client.Bytes() // the relay dialled the server
			}
			if cs := trace.ConnTo(addrC); len(cs) == 1 {
				toClient = cs[0].Server.Bytes() // the client dialled the relay
			}
			if toServer != up || toClient != down {
				t.Errorf("capture: relay sent %d bytes to the server and %d to the client; want %d and %d", toServer, toClient, up, down)
			}
		})
	}
}

func listen(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// accepted dials ln and returns the dialled and accepted ends.
func accepted(t testing.TB, ln *net.TCPListener) (dialled, acc *net.TCPConn) {
	t.Helper()
	dialled, acc, err := loopback.Connect(ln)
	if err != nil {
		t.Fatal(err)
	}
	return dialled, acc
}
