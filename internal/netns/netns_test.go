package netns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestPair: a connection from the namespace arrives from the peer's
// address, and a SYN to a hole is never answered (the dial runs into its
// deadline rather than being refused or unreachable).
func TestPair(t *testing.T) {
	p := New(t)
	ln, err := net.Listen("tcp", netip.AddrPortFrom(p.Host4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		got <- c.RemoteAddr()
		c.Close()
	}()
	c, err := p.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if a := (<-got).(*net.TCPAddr).AddrPort().Addr(); a != p.Peer4 {
		t.Errorf("connection from the namespace came from %v, want %v", a, p.Peer4)
	}
	for _, hole := range []netip.Addr{p.Hole4, p.Hole6} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := (&net.Dialer{}).DialContext(ctx, "tcp", netip.AddrPortFrom(hole, 80).String())
		cancel()
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("dial %v: %v, want the deadline (a black hole)", hole, err)
		}
	}
}
