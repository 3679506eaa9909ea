package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/netns"
	"github.com/inspectproxy/inspectproxy/internal/testdns"
)

// httpOK serves 200 to every request on ln.
func httpOK(t *testing.T, ln net.Listener) {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "reached") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// socksConnect asks for target through a SOCKS5 proxy on c and returns the
// reply code (0 is success, 2 "not allowed by ruleset").
func socksConnect(t *testing.T, c net.Conn, target string) byte {
	t.Helper()
	host, portStr, _ := net.SplitHostPort(target)
	port, _ := strconv.Atoi(portStr)
	// Greeting (no authentication), then CONNECT.
	req := []byte{5, 1, 0, 5, 1, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		req = append(req, 1)
		req = append(req, a.AsSlice()...)
	} else if err == nil {
		b := a.As16()
		req = append(req, 4)
		req = append(req, b[:]...)
	} else {
		req = append(req, 3, byte(len(host)))
		req = append(req, host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2+4) // method choice, then the reply's head
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("SOCKS reply for %s: %v", target, err)
	}
	return buf[3]
}

// TestDestinationMatrix: issue 8's matrix. From a client on another host
// (a network namespace) no address of the proxy host is reachable, in any
// form, by literal or by name; from a client on this host they are,
// except the proxy's own listeners (a loop). Each via CONNECT,
// absolute-form GET and SOCKS5.
func TestDestinationMatrix(t *testing.T) {
	pair := netns.New(t)
	// A local service on every address of this host, and a link-local one
	// (a cloud metadata server stand-in) behind the namespace.
	local, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	httpOK(t, local)
	port := strconv.Itoa(local.Addr().(*net.TCPAddr).Port)
	meta, err := pair.Listen("tcp", netip.AddrPortFrom(pair.LinkLocal4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	httpOK(t, meta)
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	socks, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	dns := testdns.Start(t, nil)
	h := startProxyWith(t, func(c *config.Config) {
		c.Listen = "0.0.0.0:0"
		c.Access.AllowClients = []string{pair.Peer4.String()}
	}, Options{Self: []net.Addr{admin.Addr()}, SOCKS: socks, Resolver: dns.Resolver()})
	_, proxyPort, _ := net.SplitHostPort(h.addr)
	adminPort := strconv.Itoa(admin.Addr().(*net.TCPAddr).Port)

	type dest struct {
		name, target string
		local        bool // a loopback client may reach it
	}
	var dests []dest
	for _, d := range []struct {
		name string
		addr netip.Addr
		port string
	}{
		{"0.0.0.0", netip.MustParseAddr("0.0.0.0"), port},
		{"[::]", netip.MustParseAddr("::"), port},
		{"[::ffff:0.0.0.0]", netip.MustParseAddr("::ffff:0.0.0.0"), port},
		{"[::ffff:127.0.0.1]", netip.MustParseAddr("::ffff:127.0.0.1"), port},
		{"127.0.0.2", netip.MustParseAddr("127.0.0.2"), port},
		{"::1", netip.MustParseAddr("::1"), port},
		{"host address", pair.Host4, port},
		{"link-local", pair.LinkLocal4, strconv.Itoa(meta.Addr().(*net.TCPAddr).Port)},
	} {
		dests = append(dests, dest{d.name, net.JoinHostPort(d.addr.String(), d.port), true})
		if d.addr.Is4() && !d.addr.IsUnspecified() || d.addr.Is6() && !d.addr.Is4In6() {
			// The same address by name (a mapped address cannot be an A
			// or AAAA record that Go's resolver keeps).
			name := fmt.Sprintf("n%d.test", len(dests))
			dns.Set(name, d.addr)
			dests = append(dests, dest{d.name + " by name", net.JoinHostPort(name, d.port), true})
		}
	}
	dns.Set("unspec.test", netip.MustParseAddr("0.0.0.0"))
	dests = append(dests,
		dest{"0.0.0.0 by name", net.JoinHostPort("unspec.test", port), true},
		dest{"the proxy's port", net.JoinHostPort("127.0.0.1", proxyPort), false},
		dest{"the proxy's port at 0.0.0.0", net.JoinHostPort("0.0.0.0", proxyPort), false},
		dest{"the proxy's port at the host address", net.JoinHostPort(pair.Host4.String(), proxyPort), false},
		dest{"the admin port", net.JoinHostPort("127.0.0.1", adminPort), false},
		dest{"the admin port at [::ffff:127.0.0.1]", net.JoinHostPort("::ffff:127.0.0.1", adminPort), false},
	)

	proxyFrom := map[string]string{
		"remote": netip.AddrPortFrom(pair.Host4, mustPort(h.addr)).String(),
		"local":  net.JoinHostPort("127.0.0.1", proxyPort),
	}
	socksFrom := map[string]string{
		"remote": netip.AddrPortFrom(pair.Host4, uint16(socks.Addr().(*net.TCPAddr).Port)).String(),
		"local":  net.JoinHostPort("127.0.0.1", strconv.Itoa(socks.Addr().(*net.TCPAddr).Port)),
	}
	dial := func(client, addr string) net.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var c net.Conn
		var err error
		if client == "remote" {
			c, err = pair.Dial(ctx, "tcp", addr)
		} else {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, client := range []string{"remote", "local"} {
		for _, d := range dests {
			allowed := client == "local" && d.local
			for _, method := range []string{"CONNECT", "GET", "SOCKS5"} {
				t.Run(client+"/"+d.name+"/"+method, func(t *testing.T) {
					var c net.Conn
					var ok bool
					switch method {
					case "CONNECT", "GET":
						c = dial(client, proxyFrom[client])
						if method == "CONNECT" {
							fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", d.target, d.target)
						} else {
							fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", d.target, d.target)
						}
						_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
						resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
						if err != nil {
							t.Fatalf("%s %s: %v", method, d.target, err)
						}
						ok = resp.StatusCode == http.StatusOK
						if !ok && resp.StatusCode != http.StatusForbidden {
							t.Errorf("%s %s: status %d, want 200 or 403", method, d.target, resp.StatusCode)
						}
					case "SOCKS5":
						c = dial(client, socksFrom[client])
						code := socksConnect(t, c, d.target)
						ok = code == 0
						if !ok && code != 2 {
							t.Errorf("SOCKS5 %s: reply %d, want 0 or 2 (not allowed)", d.target, code)
						}
					}
					c.Close()
					if ok != allowed {
						t.Errorf("%s client, %s %s: reached=%v, want %v", client, method, d.target, ok, allowed)
					}
					ev := h.event()
					if !allowed && ev.Error == "" {
						t.Errorf("refused stream's event has no error: %+v", ev)
					}
				})
			}
		}
	}
}

func mustPort(hostport string) uint16 {
	_, p, _ := net.SplitHostPort(hostport)
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// outsideAllowList listens on every address but admits only 10.0.0.0/8,
// which the network namespace's peer is not in.
func outsideAllowList(c *config.Config) {
	c.Listen = "0.0.0.0:0"
	c.Access.AllowClients = []string{"10.0.0.0/8"}
}

// dialFromPeer connects from the namespace's peer to the proxy at addr,
// through the host's side of the veth pair.
func dialFromPeer(t *testing.T, pair *netns.Pair, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pair.Dial(ctx, "tcp", netip.AddrPortFrom(pair.Host4, mustPort(addr)).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRemoteClientNotAllowed: a client on another host outside
// access.allow_clients gets 403 and an event.
func TestRemoteClientNotAllowed(t *testing.T) {
	pair := netns.New(t)
	h := startProxy(t, outsideAllowList)
	c := dialFromPeer(t, pair, h.addr)
	fmt.Fprint(c, "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("remote client outside allow_clients: %v %v, want 403", resp, err)
	}
	if ev := h.event(); ev.Error == "" || ev.Client != netip.AddrPortFrom(pair.Peer4, addrPort(c.LocalAddr()).Port()).String() {
		t.Errorf("event client %s error %q", ev.Client, ev.Error)
	}
}
