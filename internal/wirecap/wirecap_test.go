package wirecap

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestTimestamps checks the capture's clock against the sender's: each
// segment's kernel timestamp lies between the time.Now() before and after
// the write (or CloseWrite) that sent it, and before the reader's wake-up.
func TestTimestamps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvAddr := netip.MustParseAddrPort(ln.Addr().String())
	c, err := Start(Config{Ports: []uint16{srvAddr.Port()}})
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ before, after, read time.Time }
	const n = 50
	spans := make([]span, n+1)
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- s.(*net.TCPConn)
	}()
	cl, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(srvAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()
	buf := make([]byte, 1)
	for i := range n {
		spans[i].before = time.Now()
		if _, err := cl.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		spans[i].after = time.Now()
		if _, err := s.Read(buf); err != nil {
			t.Fatal(err)
		}
		spans[i].read = time.Now()
		time.Sleep(time.Millisecond)
	}
	spans[n].before = time.Now()
	_ = cl.CloseWrite()
	spans[n].after = time.Now()
	if _, err := s.Read(buf); err == nil {
		t.Fatal("read after FIN succeeded")
	}
	spans[n].read = time.Now()
	tr, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	conns := tr.ConnTo(srvAddr)
	if len(conns) != 1 {
		t.Fatalf("%d connections to %s captured, want 1", len(conns), srvAddr)
	}
	cs := conns[0].Client
	if len(cs.Segments) != n || cs.Bytes() != n || cs.FIN.IsZero() {
		t.Fatalf("captured %d segments, %d bytes, FIN %v; want %d, %d and a FIN", len(cs.Segments), cs.Bytes(), cs.FIN, n, n)
	}
	var worst time.Duration
	for i, sp := range spans {
		at := cs.FIN
		if i < n {
			at = cs.Segments[i].At
		}
		if at.Before(sp.before) || at.After(sp.after) || at.After(sp.read) {
			t.Errorf("segment %d at %s, outside its write [%s, %s] or after its read %s",
				i, at.Format(time.StampMicro), sp.before.Format(time.StampMicro), sp.after.Format(time.StampMicro), sp.read.Format(time.StampMicro))
		}
		worst = max(worst, sp.read.Sub(at))
	}
	t.Logf("largest capture-to-read delay: %v", worst)
}
