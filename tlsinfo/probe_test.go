package tlsinfo

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// countingServer is a testpki TLS server that counts handshakes; a
// non-nil gate holds every handshake until it is closed, and each held
// handshake is announced on entered.
func countingServer(t *testing.T, cert tls.Certificate, gate chan struct{}) (*testpki.Server, *atomic.Int32, chan struct{}) {
	var n atomic.Int32
	entered := make(chan struct{}, 16)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			n.Add(1)
			if gate != nil {
				entered <- struct{}{}
				<-gate
			}
			return nil, nil
		},
	}
	return testpki.StartTLS(t, cfg, nil), &n, entered
}

// rawServer accepts TCP connections and either closes them at once or holds
// them open until the test ends, counting accepts and signalling each on
// the returned channel (when there is room).
func rawServer(t *testing.T, hold bool) (string, *atomic.Int32, chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	accepted := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			select {
			case accepted <- struct{}{}:
			default:
			}
			if !hold {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), &n, accepted
}

func TestProbe(t *testing.T) {
	p := newPKI(t)
	cert := p.ecdsa
	cert.OCSPStaple = []byte{0x30, 0x03, 0x0a, 0x01, 0x00}
	cert.SignedCertificateTimestamps = [][]byte{{0, 1, 2}, {0, 3, 4}}
	srv, handshakes, _ := countingServer(t, cert, nil)
	pr := NewProber(5*time.Second, time.Minute)

	res, err := pr.Probe(context.Background(), srv.Addr, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Certificates) != 2 || !res.Certificates[0].Equal(p.ecdsa.Leaf) {
		t.Errorf("chain of %d certificates", len(res.Certificates))
	}
	if res.Version != tls.VersionTLS13 || res.ALPN != "h2" || !res.OCSPStapled || res.SCTs != 2 || res.Elapsed <= 0 {
		t.Errorf("result %+v", res)
	}
	if err := Verify(res.Certificates, "localhost", p.ca.Pool, time.Now()); err != nil {
		t.Errorf("probed chain does not verify: %v", err)
	}

	again, err := pr.Probe(context.Background(), srv.Addr, "localhost")
	if err != nil || again != res || handshakes.Load() != 1 {
		t.Errorf("second probe: same result %v, err %v, %d handshakes; want the cached one", again == res, err, handshakes.Load())
	}
	if _, err := pr.Probe(context.Background(), srv.Addr, ""); err != nil || handshakes.Load() != 2 {
		t.Errorf("another SNI: err %v, %d handshakes, want 2", err, handshakes.Load())
	}
}

func TestProbeExpires(t *testing.T) {
	p := newPKI(t)
	srv, handshakes, _ := countingServer(t, p.rsa, nil)
	pr := NewProber(5*time.Second, time.Nanosecond)
	for range 3 {
		if _, err := pr.Probe(context.Background(), srv.Addr, "localhost"); err != nil {
			t.Fatal(err)
		}
	}
	if n := handshakes.Load(); n != 3 {
		t.Errorf("%d handshakes with a 1ns ttl, want 3", n)
	}
}

// TestProbeShared: concurrent callers for one key share one handshake.
func TestProbeShared(t *testing.T) {
	p := newPKI(t)
	gate := make(chan struct{})
	srv, handshakes, _ := countingServer(t, p.rsa, gate)
	const callers = 8
	waiting := make(chan struct{}, callers)
	testHookProbeWait = func() { waiting <- struct{}{} }
	t.Cleanup(func() { testHookProbeWait = nil })

	pr := NewProber(5*time.Second, time.Minute)
	results := make([]*ProbeResult, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { results[i], errs[i] = pr.Probe(context.Background(), srv.Addr, "localhost") })
	}
	for range callers - 1 {
		<-waiting
	}
	close(gate)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || results[i] != results[0] {
			t.Errorf("caller %d: %v, shared result %v", i, errs[i], results[i] == results[0])
		}
	}
	if n := handshakes.Load(); n != 1 {
		t.Errorf("%d handshakes for %d concurrent callers, want 1", n, callers)
	}
}

func TestProbeErrors(t *testing.T) {
	t.Run("failure is cached", func(t *testing.T) {
		addr, accepts, _ := rawServer(t, false)
		pr := NewProber(5*time.Second, time.Minute)
		_, err1 := pr.Probe(context.Background(), addr, "x.example")
		_, err2 := pr.Probe(context.Background(), addr, "x.example")
		if err1 == nil || err2 != err1 || accepts.Load() != 1 {
			t.Errorf("errors %v / %v, %d accepts; want one cached failure", err1, err2, accepts.Load())
		}
	})
	t.Run("timeout", func(t *testing.T) {
		addr, _, _ := rawServer(t, true)
		pr := NewProber(100*time.Millisecond, time.Minute)
		if _, err := pr.Probe(context.Background(), addr, "x.example"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a deadline", err)
		}
	})
	t.Run("caller gives up", func(t *testing.T) {
		addr, accepts, accepted := rawServer(t, true)
		pr := NewProber(100*time.Millisecond, time.Minute)
		waiting := make(chan struct{}, 1)
		testHookProbeWait = func() { waiting <- struct{}{} }
		t.Cleanup(func() { testHookProbeWait = nil })

		ctx, cancel := context.WithCancel(context.Background())
		leaderErr := make(chan error, 1)
		go func() {
			_, err := pr.Probe(ctx, addr, "x.example")
			leaderErr <- err
		}()
		<-accepted // the first probe is connected
		// A second caller waits on the first one's probe...
		waiterErr := make(chan error, 1)
		go func() {
			_, err := pr.Probe(context.Background(), addr, "x.example")
			waiterErr <- err
		}()
		<-waiting
		// ...and when the first gives up, runs its own instead of
		// inheriting a cancellation that says nothing about the server.
		cancel()
		if err := <-leaderErr; !errors.Is(err, context.Canceled) {
			t.Errorf("leader err = %v, want canceled", err)
		}
		if err := <-waiterErr; !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("waiter err = %v, want its own probe's deadline", err)
		}
		if n := accepts.Load(); n != 2 {
			t.Errorf("%d probes, want 2", n)
		}
	})
	t.Run("waiter gives up", func(t *testing.T) {
		p := newPKI(t)
		gate := make(chan struct{})
		srv, _, entered := countingServer(t, p.rsa, gate)
		pr := NewProber(5*time.Second, time.Minute)
		waiting := make(chan struct{}, 1)
		testHookProbeWait = func() { waiting <- struct{}{} }
		t.Cleanup(func() { testHookProbeWait = nil })
		leader := make(chan error, 1)
		go func() {
			_, err := pr.Probe(context.Background(), srv.Addr, "localhost")
			leader <- err
		}()
		<-entered // the first caller's handshake is under way
		ctx, cancel := context.WithCancel(context.Background())
		waiter := make(chan error, 1)
		go func() {
			_, err := pr.Probe(ctx, srv.Addr, "localhost")
			waiter <- err
		}()
		<-waiting
		cancel()
		if err := <-waiter; !errors.Is(err, context.Canceled) {
			t.Errorf("waiter err = %v", err)
		}
		close(gate)
		if err := <-leader; err != nil {
			t.Errorf("leader err = %v", err)
		}
	})
}
