package rstwatch

import (
	"io"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testnet"
)

// TestDataAfterClose is the case the package exists for: the peer closes,
// we read its FIN, then write; its kernel answers with an RST that no read
// reports.
func TestDataAfterClose(t *testing.T) {
	c, s := testnet.Pair(t)
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
	c, s := testnet.Pair(t)
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

// TestFINBehindUnreadData: the peer sends data and closes; nobody reads.
// WatchFIN fires for the FIN although the data before it is unread, and
// the data is still there to read.
func TestFINBehindUnreadData(t *testing.T) {
	c, s := testnet.Pair(t)
	defer c.Close()
	fired := make(chan struct{})
	stop, ok := WatchFIN(c, func() { close(fired) })
	if !ok {
		t.Fatal("watch not supported")
	}
	defer stop()
	select {
	case <-fired:
		t.Fatal("fired before the peer closed")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := s.Write([]byte("unread")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's FIN behind unread data was not reported")
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "unread" {
		t.Fatalf("read %q, %v; want the data before the FIN", b, err)
	}
}

// TestWatchFINAfterTheFact: a FIN that arrived before the watch fires it
// at once.
func TestWatchFINAfterTheFact(t *testing.T) {
	c, s := testnet.Pair(t)
	defer c.Close()
	_ = s.CloseWrite()
	defer s.Close()
	time.Sleep(10 * time.Millisecond) // the FIN is in
	fired := make(chan struct{})
	stop, _ := WatchFIN(c, func() { close(fired) })
	defer stop()
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("a FIN already in was not reported")
	}
}
