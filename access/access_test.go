package access_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/netns"
	"github.com/inspectproxy/inspectproxy/internal/testdns"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/timing"
)

// gate is a minimal proxy front end: a client sends "host:port\n" and gets
// "OK <address>" once the gate has connected there, "DENIED <rule>", or
// "FAIL <error>". It runs what the pipeline will run: ParseAuthority, the
// client check, then the dialer with the policy as its Deny hook.
type gate struct {
	policy *access.Policy
	dialer timing.Dialer
}

func (g *gate) serve(t *testing.T, ln net.Listener) {
	t.Cleanup(g.policy.AddSelf(ln.Addr()))
	testnet.Serve(t, ln, g.handle)
}

func (g *gate) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	fmt.Fprintln(c, g.answer(c.RemoteAddr().(*net.TCPAddr).AddrPort(), strings.TrimSpace(line)))
}

func (g *gate) answer(client netip.AddrPort, target string) string {
	a, err := access.ParseAuthority(target)
	if err != nil {
		return "BAD " + err.Error()
	}
	if err := g.policy.Client(client); err != nil {
		return verdict(err)
	}
	d := g.dialer
	d.Deny = g.policy.DenyFor("tcp", client)
	res, err := d.Dial(context.Background(), a.String())
	if err != nil {
		return verdict(err)
	}
	res.Conn.Close()
	return "OK " + res.Remote.String()
}

func verdict(err error) string {
	var de *access.DeniedError
	if errors.As(err, &de) {
		if !errors.Is(err, access.ErrDenied) {
			return "FAIL a DeniedError that is not ErrDenied"
		}
		return "DENIED " + string(de.Rule)
	}
	return "FAIL " + err.Error()
}

func ask(t *testing.T, dial func() (net.Conn, error), target string) string {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("connect to the gate: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintln(c, target)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	return strings.TrimSpace(line)
}

// backend accepts and closes on every address of the forms under test, at
// one port: 127.0.0.1 (also what 0.0.0.0 connects to), 127.0.0.2, ::1
// (also [::]) and the pair's host-side address.
func backend(t *testing.T, addrs ...netip.Addr) uint16 {
	t.Helper()
	for try := 0; try < 20; try++ {
		var lns []net.Listener
		var port uint16
		ok := true
		for _, a := range addrs {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(a, port).String())
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
			port = uint16(ln.Addr().(*net.TCPAddr).Port)
		}
		if !ok {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		for _, ln := range lns {
			testnet.Serve(t, ln, nil)
		}
		return port
	}
	t.Fatal("no common free port for the backend")
	return 0
}

// TestDestinationMatrix makes real connections to a gate from a client in
// another network namespace (remote: the kernel sees it arrive on a veth
// from an address that is not this host's) and from a loopback client,
// and asks for every form of this host's addresses, as literals and as
// names from a DNS server. The expectations are the policy as documented
// after Squid's to_localhost: remote clients are refused this host, local
// ones are not, and nobody reaches the proxy's own listeners.
func TestDestinationMatrix(t *testing.T) {
	pair := netns.New(t)
	policy, err := access.New(config.Access{})
	if err != nil {
		t.Fatal(err)
	}
	lo4, lo2, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1")
	b := backend(t, lo4, lo2, lo6, pair.Host4)
	metaLn, err := pair.Listen("tcp", netip.AddrPortFrom(pair.LinkLocal4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, metaLn, nil)
	meta := uint16(metaLn.Addr().(*net.TCPAddr).Port)

	dns := testdns.Start(t, map[string][]netip.Addr{
		"zero.test":        {netip.MustParseAddr("0.0.0.0")},
		"any6.test":        {netip.MustParseAddr("::")},
		"mapped-zero.test": {netip.MustParseAddr("::ffff:0.0.0.0")},
		"mapped-lo.test":   {netip.MustParseAddr("::ffff:127.0.0.1")},
		"lo2.test":         {lo2},
		"lo6.test":         {lo6},
		"metadata.test":    {netip.MustParseAddr("169.254.169.254")},
		"linklocal.test":   {pair.LinkLocal4},
		"host.test":        {pair.Host4},
		"both-lo.test":     {lo6, lo4},
	})
	g := &gate{policy: policy, dialer: timing.Dialer{Timeout: 5 * time.Second, Resolver: dns.Resolver()}}
	remoteLn, err := net.Listen("tcp", netip.AddrPortFrom(pair.Host4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	g.serve(t, remoteLn)
	localLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.serve(t, localLn)
	admin := testnet.Listen(t, "127.0.0.1:0", nil) // stands for the admin listener
	t.Cleanup(policy.AddSelf(admin.Addr()))
	proxyPort := localLn.Addr().(*net.TCPAddr).Port
	remotePort := remoteLn.Addr().(*net.TCPAddr).Port
	adminPort := admin.Addr().(*net.TCPAddr).Port

	// The host address cache may predate the pair's addresses.
	waitHostAddr(t, policy, netip.AddrPortFrom(pair.Peer4, 1), netip.AddrPortFrom(pair.Host4, b))

	remote := func() (net.Conn, error) {
		return pair.Dial(context.Background(), "tcp", remoteLn.Addr().String())
	}
	local := func() (net.Conn, error) { return net.Dial("tcp", localLn.Addr().String()) }
	hp := func(h string, p any) string { return net.JoinHostPort(h, fmt.Sprint(p)) }
	ok := func(a netip.Addr, p uint16) string { return "OK " + netip.AddrPortFrom(a, p).String() }
	const self = "DENIED self"
	for _, tc := range []struct {
		target        string
		remote, local string // "" when not asked
	}{
		{hp("0.0.0.0", b), "DENIED unspecified", ok(netip.MustParseAddr("0.0.0.0"), b)},
		{hp("::", b), "DENIED unspecified", ok(netip.MustParseAddr("::"), b)},
		{hp("::ffff:0.0.0.0", b), "DENIED unspecified", ok(netip.MustParseAddr("0.0.0.0"), b)},
		{hp("::ffff:127.0.0.1", b), "DENIED loopback", ok(lo4, b)},
		{hp("127.0.0.2", b), "DENIED loopback", ok(lo2, b)},
		{hp("::1", b), "DENIED loopback", ok(lo6, b)},
		{hp("169.254.169.254", 80), "DENIED link_local", ""},
		{hp("fe80::1", 80), "DENIED link_local", ""},
		{hp(pair.LinkLocal4.String(), meta), "DENIED link_local", ok(pair.LinkLocal4, meta)},
		{hp(pair.Host4.String(), b), "DENIED host_address", ok(pair.Host4, b)},
		{hp("zero.test", b), "DENIED unspecified", ok(netip.MustParseAddr("0.0.0.0"), b)},
		{hp("any6.test", b), "DENIED unspecified", ok(netip.MustParseAddr("::"), b)},
		// Go's resolver drops an IPv4-mapped AAAA record (no IPv6 address
		// is there to dial), so such a name has no address at all.
		{hp("mapped-zero.test", b), "FAIL timing: dns", "FAIL timing: dns"},
		{hp("mapped-lo.test", b), "FAIL timing: dns", "FAIL timing: dns"},
		{hp("lo2.test", b), "DENIED loopback", ok(lo2, b)},
		{hp("lo6.test", b), "DENIED loopback", ok(lo6, b)},
		{hp("both-lo.test", b), "DENIED loopback", ok(lo6, b)},
		{hp("metadata.test", 80), "DENIED link_local", ""},
		{hp("linklocal.test", meta), "DENIED link_local", ok(pair.LinkLocal4, meta)},
		{hp("host.test", b), "DENIED host_address", ok(pair.Host4, b)},
		// The proxy's own listeners, whatever the form.
		{hp("127.0.0.1", proxyPort), self, self},
		{hp("0.0.0.0", proxyPort), self, self},
		{hp("::", proxyPort), self, self},
		{hp("::ffff:127.0.0.1", proxyPort), self, self},
		{hp("127.0.0.2", proxyPort), self, self},
		{hp(pair.Host4.String(), proxyPort), self, self},
		{hp(pair.Host4.String(), remotePort), self, self},
		{hp("zero.test", remotePort), self, self},
		{hp("127.0.0.1", adminPort), self, self},
		{hp("::ffff:127.0.0.1", adminPort), self, self},
		{hp("lo2.test", adminPort), self, self},
		// Not this host: the peer in the namespace is someone else.
		{hp(pair.Peer4.String(), 1), "FAIL", "FAIL"},
	} {
		for _, side := range []struct {
			name string
			dial func() (net.Conn, error)
			want string
		}{{"remote", remote, tc.remote}, {"local", local, tc.local}} {
			if side.want == "" {
				continue
			}
			got := ask(t, side.dial, tc.target)
			if got != side.want && !(strings.HasPrefix(side.want, "FAIL") && strings.HasPrefix(got, side.want)) {
				t.Errorf("%s client, %s: %s; want %s", side.name, tc.target, got, side.want)
			}
		}
	}
}

// waitHostAddr waits until the policy knows dst as one of this host's
// addresses (it refreshes its list about every second).
func waitHostAddr(t *testing.T, p *access.Policy, client, dst netip.AddrPort) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		var de *access.DeniedError
		if err := p.Destination("tcp", client, dst); errors.As(err, &de) && de.Rule == access.RuleHostAddress {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%v not seen as a host address within 10s", dst)
	return 0
}

// TestNewHostAddressIsSeen: an address added to an interface (a new DHCP
// lease) is refused to remote clients within seconds.
func TestNewHostAddressIsSeen(t *testing.T) {
	pair := netns.New(t)
	p, err := access.New(config.Access{})
	if err != nil {
		t.Fatal(err)
	}
	added := pair.Host4.Next().Next().Next().Next() // in the pair's /29, not yet anyone's
	client := netip.AddrPortFrom(pair.Peer4, 1)
	dst := netip.AddrPortFrom(added, 443)
	if err := p.Destination("tcp", client, dst); err != nil {
		t.Fatalf("before it is added: %v", err)
	}
	if err := pair.AddHostAddr(added); err != nil {
		t.Fatal(err)
	}
	took := waitHostAddr(t, p, client, dst)
	t.Logf("new address refused after %v", took)
}

// TestClients: access.allow_clients, and clients on this host always
// admitted (issue 11), with real connections from the namespace, from
// loopback and from this host's own address.
func TestClients(t *testing.T) {
	pair := netns.New(t)
	p, err := access.New(config.Access{AllowClients: []string{"192.168.1.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(pair.Host4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	waitHostAddr(t, p, netip.AddrPortFrom(pair.Peer4, 1), netip.AddrPortFrom(pair.Host4, 1))
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
		want access.Rule
	}{
		{"remote, not in the list", func() (net.Conn, error) { return pair.Dial(context.Background(), "tcp", ln.Addr().String()) }, access.RuleAllowClients},
		{"this host's own address", func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ""},
	} {
		c, err := tc.dial()
		if err != nil {
			t.Fatal(err)
		}
		srv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		err = p.Client(srv.RemoteAddr().(*net.TCPAddr).AddrPort())
		c.Close()
		srv.Close()
		var de *access.DeniedError
		if got := access.Rule(""); errors.As(err, &de) {
			got = de.Rule
			if got != tc.want || !strings.Contains(err.Error(), "access.allow_clients") {
				t.Errorf("%s: %v", tc.name, err)
			}
		} else if tc.want != "" {
			t.Errorf("%s: admitted, want %s", tc.name, tc.want)
		}
	}
	if err := p.Client(netip.MustParseAddrPort("127.0.0.1:5000")); err != nil {
		t.Errorf("loopback client: %v", err)
	}
	if err := p.Client(netip.MustParseAddrPort("[::ffff:192.168.1.7]:5000")); err != nil {
		t.Errorf("mapped client in the list: %v", err)
	}
}

// TestDenyDestinations: entries are normalised (an IPv4-mapped prefix is
// its IPv4 network) and apply to every client, local ones too.
func TestDenyDestinations(t *testing.T) {
	p, err := access.New(config.Access{DenyDestinations: []string{"::ffff:192.0.2.0/120", "10.0.0.0/8", "2001:db8::/32"}})
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddrPort("127.0.0.1:5000")
	for dst, want := range map[string]string{
		"192.0.2.9:443":          "192.0.2.0/24",
		"[::ffff:192.0.2.9]:443": "192.0.2.0/24",
		"10.1.2.3:80":            "10.0.0.0/8",
		"[2001:db8::5]:80":       "2001:db8::/32",
		"198.51.100.1:80":        "",
	} {
		err := p.Destination("tcp", lo, netip.MustParseAddrPort(dst))
		var de *access.DeniedError
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", dst, err)
		case want != "" && (!errors.As(err, &de) || de.Rule != access.RuleDenyDestinations || de.Entry.String() != want || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: %v, want entry %s", dst, err, want)
		}
	}
}

// TestAllowLocalDestinations: a remote client may then reach this host,
// but still not the proxy itself.
func TestAllowLocalDestinations(t *testing.T) {
	p, err := access.New(config.Access{AllowLocalDestinations: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer p.AddSelf(ln.Addr())()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	remote := netip.MustParseAddrPort("192.0.2.200:5000") // not this host's
	if err := p.Destination("tcp", remote, netip.MustParseAddrPort("127.0.0.2:9000")); err != nil {
		t.Errorf("loopback: %v", err)
	}
	if err := p.Destination("tcp", remote, netip.AddrPortFrom(netip.MustParseAddr("0.0.0.0"), port)); !errors.Is(err, access.ErrDenied) {
		t.Errorf("the proxy itself: %v", err)
	}
	if err := p.Destination("udp", remote, netip.AddrPortFrom(netip.MustParseAddr("0.0.0.0"), port)); err != nil {
		t.Errorf("a UDP port that no listener of the proxy holds: %v", err)
	}
}

// TestCheckBound: the open-proxy rule on the address actually bound.
func TestCheckBound(t *testing.T) {
	c := config.Default()
	for _, tc := range []struct {
		addr string
		open bool
	}{
		{"127.0.0.1:8080", false}, {"[::1]:8080", false}, {"[::ffff:127.0.0.1]:8080", false},
		{"192.0.2.2:8080", true}, {"0.0.0.0:8080", true}, {"[::]:8080", true},
	} {
		a := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tc.addr))
		err := access.CheckBound(&c, "listen", a)
		if (err != nil) != tc.open || (err != nil && (!errors.Is(err, config.ErrOpenProxy) || !strings.Contains(err.Error(), "listen bound "+a.String()))) {
			t.Errorf("CheckBound(%s) = %v", tc.addr, err)
		}
	}
	c.Access.AllowClients = []string{"192.0.2.0/24"}
	if err := access.CheckBound(&c, "listen", &net.TCPAddr{IP: net.IPv4zero, Port: 1}); err != nil {
		t.Errorf("with an allow list: %v", err)
	}
}

// TestCheckBoundWithHostileHosts: issue 8's finding, with localhost
// pointing at a non-loopback address of this host in /etc/hosts (in a
// private mount namespace): listening on "localhost:0" binds that
// address, and CheckBound refuses it.
func TestCheckBoundWithHostileHosts(t *testing.T) {
	if netns.InHostsChild() {
		ln, err := net.Listen("tcp", "localhost:0")
		if err != nil {
			fmt.Println("LISTEN", err)
			os.Exit(1)
		}
		c := config.Default()
		err = access.CheckBound(&c, "listen", ln.Addr())
		fmt.Println("CHECK", err)
		os.Exit(0)
	}
	pair := netns.New(t)
	out, err := netns.RunWithHosts(t, pair.Host4.String()+" localhost\n", "TestCheckBoundWithHostileHosts")
	if err != nil || !strings.Contains(string(out), "CHECK config: refusing to run as an open proxy: listen bound "+pair.Host4.String()) {
		t.Fatalf("%v: %s", err, out)
	}
}
