package wiretest

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fullListener listens on loopback with an accept queue of one, filled by
// a connection nobody accepts until release: meanwhile the kernel drops
// every SYN to it, and a connecting client retransmits its SYN after the
// initial retransmission timeout (1 s). netem would give any delay, but
// not every kernel has it (CONFIG_NET_SCH_NETEM); this works on all.
func fullListener(t *testing.T) (ln net.Listener, release func()) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "full listener")
	ln, err = net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	filler, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return ln, func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}
}

// TestSlowConnectAgainstTheWire times a connect whose first SYN is dropped:
// connect_ms runs from the first SYN to the SYN/ACK of the retransmitted
// one, as on the wire, within 0.5 ms.
func TestSlowConnectAgainstTheWire(t *testing.T) {
	attempts(t, func(t *testing.T, late *lateTimes) {
		ln, release := fullListener(t)
		p := startProxy(t, nil)
		cp := capture(t, p.addr, ln.Addr().(*net.TCPAddr).AddrPort())
		go func() {
			time.Sleep(200 * time.Millisecond) // the proxy's first SYN has been dropped by now
			release()
		}()
		// The CONNECT returns once the retransmitted SYN is answered.
		c := p.connect(t, ln.Addr().(*net.TCPAddr).AddrPort())
		server := serveOn(t, ln, serverExchange(drain))
		clientExchange(func(c *net.TCPConn) {
			_ = c.CloseWrite()
			drain(c)
		})(c)
		c.Close()
		ev := p.event()
		tr := stopCapture(t, cp)
		l := findLegs(t, tr, ev, server)
		if l.upstream == nil {
			t.Fatal("the upstream leg is not in the capture")
		}
		// A retransmitted SYN leaves the kernel no clean round-trip
		// sample (Karn's rule), so connect_ms is the proxy's own clock
		// here, held to the tolerance of the other times it reads.
		w := check(t, ev, l, expect{connectAbove: finTolerance}, late)
		if w.connectMS == nil || *w.connectMS < 900 {
			t.Errorf("the wire's SYN→SYN/ACK is %s ms; the scenario wants a retransmitted SYN (about 1000 ms)", fmtMS(w.connectMS))
		}
	})
}
