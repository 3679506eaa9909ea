package wireguard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// listen opens a TCP listener on the n-th upstream address.
func listen(t testing.TB, n, port int) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(upstream(n), uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// serve runs handle for each connection of ln.
func serve(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

// counted counts a client's bytes on the wire, TLS records included.
type counted struct {
	net.Conn
	in, out atomic.Int64
}

func (c *counted) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	return n, err
}

func (c *counted) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
}

// dialed is a connection a device made and when it did.
type dialed struct {
	*counted
	start, up time.Time
}

func (c *client) dial(t testing.TB, addr string) *dialed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	nc, err := c.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s through the tunnel: %v", addr, err)
	}
	return &dialed{counted: &counted{Conn: nc}, start: start, up: time.Now()}
}

// checkTunnelEvent asserts what every tunnel event of a device's
// connection says, as the proxy-mode tests do for CONNECT.
func checkTunnelEvent(t *testing.T, ev *event.Event, c *client, d *dialed, target string) {
	t.Helper()
	local := d.LocalAddr().(*net.TCPAddr).AddrPort()
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"kind", ev.Kind, event.KindTunnel},
		{"source", ev.Source, event.SourceWireGuard},
		{"peer", ev.Peer, "phone"},
		{"client", ev.Client, netip.AddrPortFrom(c.addr, local.Port()).String()},
		{"target", ev.Target, target},
		{"bytes_up", ev.TCP.BytesUp, d.out.Load()},
		{"bytes_down", ev.TCP.BytesDown, d.in.Load()},
	} {
		if f.got != f.want {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
	// start is the device's SYN: after it began to connect, before the
	// handshake it completed.
	if ev.Start.Before(d.start) || ev.Start.After(d.up) {
		t.Errorf("start %v not within the device's connect [%v, %v]", ev.Start, d.start, d.up)
	}
	if ev.Error != "" {
		t.Errorf("error %q", ev.Error)
	}
}

// TestTCP connects through the tunnel as apps do: HTTPS with TLS 1.2 and
// 1.3, and plain HTTP, each closed by the server first after its answer.
func TestTCP(t *testing.T) {
	env := testServer(t, nil)
	c := newClient(t, env.config(t, "phone"))
	ca := testpki.NewCA(t, "wireguard test CA")
	leaf := ca.Leaf(t, testpki.LeafOpts{DNSNames: []string{"api.example.test"}, IPs: []net.IP{upstream(1).AsSlice()}})
	for _, tc := range []struct {
		name string
		tls  uint16
	}{
		{"https TLS 1.2", tls.VersionTLS12},
		{"https TLS 1.3", tls.VersionTLS13},
		{"http", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, 1, 0)
			if tc.tls != 0 {
				ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tc.tls, MaxVersion: tc.tls})
			}
			serve(ln, func(c net.Conn) {
				defer c.Close()
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			})
			addr := ln.Addr().String()
			d := c.dial(t, addr)
			var rw net.Conn = d
			if tc.tls != 0 {
				tc := tls.Client(d, &tls.Config{ServerName: "api.example.test", RootCAs: ca.Pool})
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				rw = tc
			}
			if _, err := io.WriteString(rw, "GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := io.ReadAll(rw)
			if err != nil || !strings.HasSuffix(string(resp), "\r\n\r\nok") {
				t.Fatalf("response %q, %v", resp, err)
			}
			_, _ = io.ReadAll(d) // past TLS's close_notify, to the server's FIN
			_ = d.Close()
			ev := env.events.wait(t, "tunnel", func(e *event.Event) bool { return e.Kind == event.KindTunnel && e.Target == addr })
			checkTunnelEvent(t, ev, c, d, addr)
			if ev.TCP.FirstFIN != event.SideServer || ev.TCP.RST != "" {
				t.Errorf("first_fin %q rst %q, want the server's FIN and no reset", ev.TCP.FirstFIN, ev.TCP.RST)
			}
			if ev.TCP.DNSMS != nil {
				t.Errorf("dns_ms %v for a connection to an address the device did not look up", *ev.TCP.DNSMS)
			}
			if tc.tls != 0 && (ev.TLS == nil || ev.TLS.VersionCode != tc.tls || ev.TLS.SNI != "api.example.test") {
				t.Errorf("tls %+v", ev.TLS)
			}
		})
	}
}

// TestClose covers who ends a connection: the device's FIN first, the
// server's reset, the device's reset, and an upstream that refuses.
func TestClose(t *testing.T) {
	env := testServer(t, nil)
	c := newClient(t, env.config(t, "phone"))

	t.Run("client first", func(t *testing.T) {
		ln := listen(t, 1, 0)
		serve(ln, func(c net.Conn) {
			defer c.Close()
			b, _ := io.ReadAll(c) // until the device's FIN
			_, _ = c.Write(b)
		})
		d := c.dial(t, ln.Addr().String())
		_, _ = io.WriteString(d, "ping")
		if err := d.Conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(d); string(b) != "ping" || err != nil {
			t.Fatalf("echo %q, %v", b, err)
		}
		_ = d.Close()
		ev := env.events.wait(t, "tunnel", func(e *event.Event) bool { return e.Target == ln.Addr().String() })
		checkTunnelEvent(t, ev, c, d, ln.Addr().String())
		if ev.TCP.FirstFIN != event.SideClient || ev.TCP.RST != "" {
			t.Errorf("first_fin %q rst %q, want the client's FIN", ev.TCP.FirstFIN, ev.TCP.RST)
		}
	})

	t.Run("server reset", func(t *testing.T) {
		ln := listen(t, 1, 0)
		serve(ln, func(c net.Conn) {
			_, _ = c.Read(make([]byte, 10))
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		})
		d := c.dial(t, ln.Addr().String())
		_, _ = io.WriteString(d, "ping")
		_, err := io.ReadAll(d)
		if err == nil || !strings.Contains(err.Error(), "reset") {
			t.Errorf("device read %v, want a reset", err)
		}
		_ = d.Close()
		ev := env.events.wait(t, "tunnel", func(e *event.Event) bool { return e.Target == ln.Addr().String() })
		if ev.TCP.RST != event.SideServer {
			t.Errorf("rst %q, want server", ev.TCP.RST)
		}
	})

	t.Run("client reset", func(t *testing.T) {
		ln := listen(t, 1, 0)
		got := make(chan error, 1)
		serve(ln, func(c net.Conn) {
			defer c.Close()
			_, _ = c.Write(make([]byte, 1000))
			_, err := io.ReadAll(c)
			got <- err
		})
		d := c.dial(t, ln.Addr().String())
		if _, err := io.ReadFull(d, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the rest arrives, unread
		_ = d.Close()                      // closing with unread data resets (RFC 2525)
		if err := <-got; err == nil || !strings.Contains(err.Error(), "reset") {
			t.Errorf("server read %v, want a reset", err)
		}
		ev := env.events.wait(t, "tunnel", func(e *event.Event) bool { return e.Target == ln.Addr().String() })
		if ev.TCP.RST != event.SideClient {
			t.Errorf("rst %q, want client", ev.TCP.RST)
		}
	})

	t.Run("upstream refuses", func(t *testing.T) {
		ln := listen(t, 1, 0)
		addr := ln.Addr().String()
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.DialContext(ctx, "tcp", addr)
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("dial %v, want the device's connect refused (a reset to its SYN)", err)
		}
		ev := env.events.wait(t, "tunnel", func(e *event.Event) bool { return e.Target == addr })
		if ev.Error == "" || ev.TCP.BytesUp != 0 {
			t.Errorf("event %+v", ev)
		}
	})
}

// TestDNS looks names up through the tunnel's resolver, then connects to
// the answer: the connection is linked to the lookup.
func TestDNS(t *testing.T) {
	env := testServer(t, nil)
	c := newClient(t, env.config(t, "phone"))
	ln := listen(t, 1, 0)
	serve(ln, func(c net.Conn) { _, _ = io.Copy(c, c); _ = c.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	addrs, err := c.LookupHost("api.example.test")
	if err != nil || !slices.Equal(addrs, []string{upstream(1).String()}) {
		t.Fatalf("lookup %v, %v", addrs, err)
	}
	dns := env.events.wait(t, "dns", func(e *event.Event) bool { return e.Kind == event.KindDNS && e.DNS.Name == "api.example.test" })
	if dns.Source != event.SourceWireGuard || dns.Peer != "phone" || !strings.HasPrefix(dns.Client, c.addr.String()+":") || dns.Target != "10.64.0.1:53" {
		t.Errorf("dns event %+v", dns)
	}
	if d := dns.DNS; d.Type != "A" || d.TypeCode != 1 || d.RCode != "NOERROR" || d.RCodeCode != 0 || !slices.Equal(d.Answers, addrs) || d.MS <= 0 {
		t.Errorf("dns %+v", d)
	}

	d := c.dial(t, net.JoinHostPort(addrs[0], port))
	_, _ = io.WriteString(d, "hello")
	_ = d.Conn.(interface{ CloseWrite() error }).CloseWrite()
	_, _ = io.ReadAll(d)
	_ = d.Close()
	ev := env.events.wait(t, "linked tunnel", func(e *event.Event) bool { return e.Kind == event.KindTunnel })
	checkTunnelEvent(t, ev, c, d, "api.example.test:"+port)
	if ev.TCP.DNSMS == nil || *ev.TCP.DNSMS != dns.DNS.MS {
		t.Errorf("dns_ms %v, want the lookup's %v", deref(ev.TCP.DNSMS), dns.DNS.MS)
	}

	t.Run("nxdomain", func(t *testing.T) {
		_, err := c.LookupHost("nope.example.test")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("lookup error %v, want not found", err)
		}
		ev := env.events.wait(t, "dns", func(e *event.Event) bool { return e.Kind == event.KindDNS && e.DNS.Name == "nope.example.test" })
		if ev.DNS.RCode != "NXDOMAIN" || ev.DNS.RCodeCode != 3 || len(ev.DNS.Answers) != 0 {
			t.Errorf("dns %+v", ev.DNS)
		}
	})
	t.Run("no A record", func(t *testing.T) {
		// The name exists with only an AAAA record: NODATA, not NXDOMAIN.
		_, err := c.LookupHost("v6only.test")
		if err == nil {
			t.Error("lookup found an A record")
		}
		ev := env.events.wait(t, "dns", func(e *event.Event) bool { return e.Kind == event.KindDNS && e.DNS.Name == "v6only.test" })
		if ev.DNS.RCode != "NOERROR" || len(ev.DNS.Answers) != 0 {
			t.Errorf("dns %+v", ev.DNS)
		}
	})
}

// TestQUIC tries QUIC as an app does, with quic-go: refused by default
// (the client gives up and falls back to TCP), forwarded with --wireguard-quic pass.
func TestQUIC(t *testing.T) {
	ca := testpki.NewCA(t, "wireguard test CA")
	leaf := ca.Leaf(t, testpki.LeafOpts{DNSNames: []string{"api.example.test"}, IPs: []net.IP{upstream(2).AsSlice()}})
	clientTLS := &tls.Config{ServerName: "api.example.test", RootCAs: ca.Pool, NextProtos: []string{"h3"}}

	t.Run("refused, then TCP", func(t *testing.T) {
		env := testServer(t, nil)
		c := newClient(t, env.config(t, "phone"))
		ln := listen(t, 2, 443)
		serve(ln, func(c net.Conn) { _, _ = io.Copy(c, c); _ = c.Close() })
		dst := netip.AddrPortFrom(upstream(2), 443)
		pc, err := c.DialUDPAddrPort(netip.AddrPort{}, dst)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr := &quic.Transport{Conn: pc}
		start := time.Now()
		_, err = tr.Dial(ctx, net.UDPAddrFromAddrPort(dst), clientTLS, &quic.Config{HandshakeIdleTimeout: 4 * time.Second})
		// The ICMP port unreachable reaches the client's socket: it
		// gives up at once rather than after its handshake timeout.
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("QUIC dial: %v, want connection refused", err)
		}
		t.Logf("QUIC dial failed after %v: %v", time.Since(start), err)
		_ = tr.Close()
		_ = pc.Close()
		d := c.dial(t, dst.String()) // the fallback
		_, _ = io.WriteString(d, "x")
		_ = d.Close()

		ev := env.events.wait(t, "udp", func(e *event.Event) bool { return e.Kind == event.KindUDP })
		u := ev.UDP
		if u.Verdict != VerdictRefused || u.Remote != dst.String() || ev.Target != dst.String() || u.PacketsUp < 1 || u.BytesUp < 1200 || u.PacketsDown != 0 || ev.Peer != "phone" || !strings.Contains(ev.Error, "QUIC refused") {
			t.Errorf("udp event %+v %+v", ev, u)
		}
		if u.QUIC == nil || u.QUIC.Version != "1" || u.QUIC.SNI != "api.example.test" || !slices.Equal(u.QUIC.ALPN, []string{"h3"}) {
			t.Errorf("quic %+v", u.QUIC)
		}
		env.events.wait(t, "tunnel fallback", func(e *event.Event) bool { return e.Kind == event.KindTunnel && e.Target == dst.String() })
	})

	t.Run("pass", func(t *testing.T) {
		env := testServer(t, func(o *Options) { o.QUIC = QUICPass })
		c := newClient(t, env.config(t, "phone"))
		ql, err := quic.ListenAddr(netip.AddrPortFrom(upstream(2), 443).String(), &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"h3"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ql.Close()
		// The server's connection ends when the client's CONNECTION_CLOSE
		// arrives, or with the test: that packet is UDP, and may be lost.
		serving, stop := context.WithCancel(context.Background())
		served := make(chan struct{})
		defer func() { stop(); <-served }()
		go func() {
			defer close(served)
			conn, err := ql.Accept(serving)
			if err != nil {
				return
			}
			defer conn.CloseWithError(0, "")
			s, err := conn.AcceptStream(serving)
			if err == nil {
				_, _ = io.Copy(s, s)
				_ = s.Close()
			}
			select {
			case <-conn.Context().Done():
			case <-serving.Done():
			}
		}()
		dst := netip.AddrPortFrom(upstream(2), 443)
		pc, err := c.DialUDPAddrPort(netip.AddrPort{}, dst)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tr := &quic.Transport{Conn: pc}
		conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(dst), clientTLS, nil)
		if err != nil {
			t.Fatalf("QUIC through the tunnel: %v", err)
		}
		s, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(s, "quic ping")
		_ = s.Close()
		if b, err := io.ReadAll(s); string(b) != "quic ping" {
			t.Fatalf("echo %q, %v", b, err)
		}
		_ = conn.CloseWithError(0, "")
		_ = tr.Close()
		_ = pc.Close()
		ev := env.events.wait(t, "udp", func(e *event.Event) bool { return e.Kind == event.KindUDP })
		u := ev.UDP
		if u.Verdict != VerdictForwarded || u.PacketsUp < 2 || u.PacketsDown < 2 || u.BytesDown < 1000 || u.DurationMS <= 0 || ev.Error != "" {
			t.Errorf("udp %+v, error %q", u, ev.Error)
		}
		if u.QUIC == nil || u.QUIC.SNI != "api.example.test" {
			t.Errorf("quic %+v", u.QUIC)
		}
	})
}

// TestUDP forwards other UDP, one event per flow once it is idle; the
// destination policy refuses some.
func TestUDP(t *testing.T) {
	denied := netip.AddrPortFrom(upstream(3), 7)
	// The access rules serve calls for UDP, with a deny list.
	policy, err := access.New(config.Access{DenyDestinations: []string{denied.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	env := testServer(t, func(o *Options) {
		o.CheckDestination = func(client netip.Addr, dst netip.AddrPort) error {
			return policy.Destination("udp", netip.AddrPortFrom(client, 0), dst)
		}
	})
	c := newClient(t, env.config(t, "phone"))
	echo, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(upstream(1), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	dst := echo.LocalAddr().(*net.UDPAddr).AddrPort()
	uc, err := c.DialUDPAddrPort(netip.AddrPort{}, dst)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		msg := fmt.Sprintf("datagram %d", i)
		_, _ = uc.Write([]byte(msg))
		buf := make([]byte, 100)
		_ = uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := uc.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo %q, %v", buf[:n], err)
		}
	}
	_ = uc.Close()
	ev := env.events.wait(t, "udp", func(e *event.Event) bool { return e.Kind == event.KindUDP && e.UDP.Remote == dst.String() })
	if u := ev.UDP; u.Verdict != VerdictForwarded || u.PacketsUp != 3 || u.PacketsDown != 3 || u.BytesUp != 30 || u.BytesDown != 30 || u.QUIC != nil {
		t.Errorf("udp %+v", u)
	}

	dc, err := c.DialUDPAddrPort(netip.AddrPort{}, denied)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = dc.Write([]byte("x"))
	_ = dc.Close()
	ev = env.events.wait(t, "refused udp", func(e *event.Event) bool { return e.Kind == event.KindUDP && e.UDP.Remote == denied.String() })
	if ev.UDP.Verdict != VerdictRefused || !strings.Contains(ev.Error, "deny_destinations") {
		t.Errorf("refused udp %+v %+v", ev, ev.UDP)
	}
}

// TestAccess: only configured peers get in; the tunnel's own network is
// no destination; peers added while the server runs get in at once.
func TestAccess(t *testing.T) {
	env := testServer(t, func(o *Options) { o.MaxConnectionsPerPeer = 2 })
	c := newClient(t, env.config(t, "phone"))
	ln := listen(t, 1, 0)
	serve(ln, func(c net.Conn) { _, _ = io.Copy(io.Discard, c); _ = c.Close() })

	t.Run("tunnel address", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.DialContext(ctx, "tcp", "10.64.0.9:80"); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("dial %v, want refused", err)
		}
	})

	t.Run("per-peer cap", func(t *testing.T) {
		a, b := c.dial(t, ln.Addr().String()), c.dial(t, ln.Addr().String())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.DialContext(ctx, "tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("third connection: %v, want refused", err)
		}
		ev := env.events.wait(t, "limit", func(e *event.Event) bool { return e.Limit != "" })
		if ev.Limit != LimitPerPeer || ev.Peer != "phone" || ev.TCP.RST != event.SideProxy {
			t.Errorf("event %+v", ev)
		}
		_ = a.Close()
		_ = b.Close()
	})

	t.Run("unknown peer", func(t *testing.T) {
		stranger, err := env.store.AddPeer("stranger", env.srv.opts.Network, netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := ClientConfig(stranger, mustServerKey(t, env.store), fmt.Sprintf("127.0.0.1:%d", env.srv.Port()), DNSAddrs(env.srv.opts.Network, netip.Prefix{}), 1420)
		if err := env.store.RemovePeer("stranger"); err != nil {
			t.Fatal(err)
		}
		waitPeers(t, env.srv, 1)
		sc := newClient(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := sc.DialContext(ctx, "tcp", ln.Addr().String()); err == nil {
			t.Error("a removed peer connected")
		}
	})

	t.Run("peer added while running", func(t *testing.T) {
		if _, err := env.store.AddPeer("tablet", env.srv.opts.Network, netip.Prefix{}); err != nil {
			t.Fatal(err)
		}
		waitPeers(t, env.srv, 2)
		tc := newClient(t, env.config(t, "tablet"))
		d := tc.dial(t, ln.Addr().String())
		_ = d.Close()
		ev := env.events.wait(t, "tablet", func(e *event.Event) bool { return e.Peer == "tablet" })
		if ev.Client != netip.AddrPortFrom(netip.MustParseAddr("10.64.0.3"), d.LocalAddr().(*net.TCPAddr).AddrPort().Port()).String() {
			t.Errorf("client %s", ev.Client)
		}
	})
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// waitPeers waits for the server to have reloaded n peers' addresses.
func waitPeers(t *testing.T, s *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(*s.peers.Load()) != n; {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d peers, want %d", len(*s.peers.Load()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestListenHost: the listen host is the only address the UDP port is
// bound on, and an empty host binds every address. The kernel judges: a
// second socket can bind the same port on another loopback address only
// if the server did not take the wildcard. A device's connection goes
// through each kind of bind, IPv6 too.
func TestListenHost(t *testing.T) {
	for _, tc := range []struct {
		listen    string
		otherFree bool
	}{
		{"127.0.0.1:0", true},
		{"[::1]:0", true},
		{":0", false},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			env := testServer(t, func(o *Options) { o.Listen = tc.listen })
			other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: int(env.srv.Port())})
			if err == nil {
				_ = other.Close()
			}
			if free := err == nil; free != tc.otherFree {
				t.Errorf("listen %q: port %d on 127.0.0.2 free = %v (%v), want %v", tc.listen, env.srv.Port(), free, err, tc.otherFree)
			}

			ln := listen(t, 1, 0)
			serve(ln, func(c net.Conn) {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
			d := newClient(t, env.config(t, "phone")).dial(t, ln.Addr().String())
			if _, err := io.WriteString(d, "through the tunnel"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len("through the tunnel"))
			if _, err := io.ReadFull(d, buf); err != nil || string(buf) != "through the tunnel" {
				t.Fatalf("echo %q, %v", buf, err)
			}
			_ = d.Close()
			env.events.wait(t, "tunnel", func(e *event.Event) bool { return e.Kind == event.KindTunnel && e.Peer == "phone" })
		})
	}
}

// TestListenHostRefused: a host that is no address of this machine is a
// clear error naming it, not a server on every address.
func TestListenHostRefused(t *testing.T) {
	events := newSink()
	_, err := New(Options{Listen: "192.0.2.1:0", Store: NewStore(t.TempDir()), Network: netip.MustParsePrefix("10.64.0.0/24"),
		Emit: events.emit, Handler: pipeline(t, events)})
	if err == nil || !strings.Contains(err.Error(), `"192.0.2.1:0"`) {
		t.Fatalf("New on 192.0.2.1: %v, want an error naming the listen address", err)
	}
}
