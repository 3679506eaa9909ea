// Package netns gives tests a real remote peer: a network namespace joined
// to this one by a veth pair, so that a connection made from inside it
// arrives from an address that is not this host's (a phone on the LAN, as
// far as the kernel can tell), and addresses whose packets leave on the
// wire and vanish (a black hole, for connect timeouts and Happy Eyeballs).
// It needs root and iproute2's ip; tests using it must not skip, since CI
// runs as root.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Pair is a namespace and the veth pair that joins it to this one.
type Pair struct {
	// Name is the namespace's name under /run/netns.
	Name string
	// HostIf and PeerIf are the veth ends here and in the namespace.
	HostIf, PeerIf string
	// Host4/Host6 are this side's addresses (they are this host's own
	// addresses while the pair exists); Peer4/Peer6 the namespace's.
	Host4, Peer4, Host6, Peer6 netip.Addr
	// Hole4 and Hole6 are routed through the namespace, which drops them
	// without an answer: a SYN sent there is on the wire and never answered.
	Hole4, Hole6 netip.Addr
	// LinkLocal4 is a random 169.254.0.0/16 address the namespace owns,
	// routed to from here: a stand-in for a cloud metadata server, which
	// Listen can serve.
	LinkLocal4 netip.Addr
}

// New creates a Pair with unique names and random addresses from the
// benchmarking range 198.18.0.0/15 and a random ULA /48, and removes it
// when the test ends.
func New(t testing.TB) *Pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netns: needs root (CI runs as root)")
	}
	var lastErr error
	for range 5 { // another test may hold the random prefix
		p := random()
		err := p.create()
		if err == nil {
			t.Cleanup(func() { _ = ip("netns", "del", p.Name) })
			return p
		}
		_ = ip("netns", "del", p.Name)
		_ = ip("link", "del", p.HostIf)
		lastErr = err
	}
	t.Fatalf("netns: %v", lastErr)
	return nil
}

func random() *Pair {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := fmt.Sprintf("%x", b[:3])
	// A /29 in 198.18.0.0/15: .1 here, .2 there, .4/30 the hole.
	n := binary.BigEndian.Uint32(b[3:7]) % (1 << 14)
	base := 198<<24 | 18<<16 | n<<3
	v4 := func(off uint32) netip.Addr {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+off)
		return netip.AddrFrom4(a)
	}
	v6 := func(sub, host byte) netip.Addr {
		a := [16]byte{0xfd, b[3], b[4], b[5], b[6], b[7], 0, sub}
		a[15] = host
		return netip.AddrFrom16(a)
	}
	return &Pair{
		Name: "ipx" + id, HostIf: "ipx" + id + "h", PeerIf: "ipx" + id + "p",
		Host4: v4(1), Peer4: v4(2), Hole4: v4(6),
		Host6: v6(0, 1), Peer6: v6(0, 2), Hole6: v6(1, 1),
		LinkLocal4: netip.AddrFrom4([4]byte{169, 254, b[5] | 1, b[6] | 1}), // never .0 (reserved)
	}
}

func (p *Pair) create() error {
	in := func(args ...string) error { return ip(append([]string{"-n", p.Name}, args...)...) }
	hole4 := netip.PrefixFrom(p.Hole4, 30).Masked().String()
	hole6 := netip.PrefixFrom(p.Hole6, 64).Masked().String()
	for _, step := range []func() error{
		func() error { return ip("netns", "add", p.Name) },
		func() error {
			return ip("link", "add", p.HostIf, "type", "veth", "peer", "name", p.PeerIf, "netns", p.Name)
		},
		func() error { return ip("addr", "add", p.Host4.String()+"/30", "dev", p.HostIf) },
		func() error { return ip("addr", "add", p.Host6.String()+"/64", "dev", p.HostIf, "nodad") },
		func() error { return ip("link", "set", p.HostIf, "up") },
		func() error { return in("link", "set", "lo", "up") },
		func() error { return in("addr", "add", p.Peer4.String()+"/30", "dev", p.PeerIf) },
		func() error { return in("addr", "add", p.Peer6.String()+"/64", "dev", p.PeerIf, "nodad") },
		func() error { return in("addr", "add", p.LinkLocal4.String()+"/32", "dev", p.PeerIf) },
		func() error { return in("link", "set", p.PeerIf, "up") },
		// The holes: routed into the namespace, which discards them
		// silently (a blackhole route sends no ICMP).
		func() error { return ip("route", "add", hole4, "via", p.Peer4.String(), "dev", p.HostIf) },
		func() error { return ip("-6", "route", "add", hole6, "via", p.Peer6.String(), "dev", p.HostIf) },
		func() error {
			return ip("route", "add", p.LinkLocal4.String()+"/32", "via", p.Peer4.String(), "dev", p.HostIf)
		},
		func() error { return in("route", "add", "blackhole", hole4) },
		func() error { return in("-6", "route", "add", "blackhole", hole6) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddHostAddr gives this side of the pair one more address, as a DHCP
// lease would; it goes with the pair.
func (p *Pair) AddHostAddr(a netip.Addr) error {
	return ip("addr", "add", netip.PrefixFrom(a, a.BitLen()).String(), "dev", p.HostIf)
}

// Do runs fn on an OS thread inside the namespace: sockets fn creates
// belong to the namespace for their whole life, wherever they are used
// afterwards. fn must not start goroutines that create sockets.
func (p *Pair) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked unless the thread is back in its own namespace: a
		// locked thread is discarded when its goroutine exits.
		orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + p.Name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns: setns %s: %w", p.Name, err)
			return
		}
		ferr := fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Dial connects from inside the namespace to addr (an IP literal: no DNS
// is done in the namespace).
func (p *Pair) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := p.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the namespace.
func (p *Pair) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := p.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}
