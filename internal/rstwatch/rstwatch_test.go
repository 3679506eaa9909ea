package rstwatch

import (
	"io"
	"net"
	"testing"
	"time"
)

// pair returns a connected loopback pair: the dialled end and the accepted end.
func pair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestDataAfterClose is the case the package exists for: the peer closes,
// we read its FIN, then write; its kernel answers with an RST that no read
// reports.
func TestDataAfterClose(t *testing.T) {
	c, s := pair(t)
	defer c.Close()
	fired := make(chan struct{})
	s.Close() // the peer closes: FIN
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	stop, ok := Watch(c, func() { close(fired) })
	if !ok {
		t.Fatal("watch not supported")
	}
	defer stop()
	if _, err := c.Write([]byte("after close")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's RST was not reported")
	}
}

// TestHalfCloseDoesNotFire: a peer that only shut down its sending side
// reads our data; nothing is reset.
func TestHalfCloseDoesNotFire(t *testing.T) {
	c, s := pair(t)
	defer c.Close()
	defer s.Close()
	fired := make(chan struct{}, 1)
	_ = s.CloseWrite()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	stop, _ := Watch(c, func() { fired <- struct{}{} })
	if _, err := c.Write([]byte("still welcome")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 13)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	stop()
	_ = c.CloseWrite() // after stop: our own FIN must not be reported
	select {
	case <-fired:
		t.Fatal("fired for a half-close")
	case <-time.After(100 * time.Millisecond):
	}
}
