package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
)

func TestPlainHTTPReuse(t *testing.T) {
	h := startProxy(t, nil)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond)
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer up.Close()
	pu, _ := url.Parse("http://" + h.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), MaxConnsPerHost: 1}
	cl := &http.Client{Transport: tr}
	for _, p := range []string{"/a", "/b"} {
		if _, b := get(t, cl, up.URL+p); b != "hello "+p {
			t.Fatalf("body %q", b)
		}
	}
	tr.CloseIdleConnections()
	ev := h.event()
	if ev.Kind != event.KindHTTP || len(ev.HTTP) != 2 || len(ev.Upstreams) != 1 {
		t.Fatalf("kind=%s http=%d upstreams=%d error=%q", ev.Kind, len(ev.HTTP), len(ev.Upstreams), ev.Error)
	}
	a, b := ev.HTTP[0], ev.HTTP[1]
	if a.Reused || !b.Reused || a.UpstreamID != 1 || b.UpstreamID != 1 {
		t.Errorf("reuse: first %+v second %+v", a, b)
	}
	if a.Status != 200 || a.WaitMS == nil || *a.WaitMS < 4 || a.ReceiveMS == nil || a.Bytes != int64(len("hello /a")) {
		t.Errorf("first request timing: %+v wait=%v", a, a.WaitMS)
	}
	u := ev.Upstreams[0]
	if u.TCP.ConnectMS == nil || u.TCP.FirstFIN != event.SideProxy || u.TCP.BytesDown == 0 {
		t.Errorf("upstream tcp: %+v", u.TCP)
	}
	// The proxy dialled this one: its FIN is the originator's F.
	if u.TCP.History != "ShDdF" {
		t.Errorf("upstream history %q, want ShDdF", u.TCP.History)
	}
	if ev.TCP == nil || ev.TCP.ConnectMS == nil {
		t.Errorf("tcp should be the first upstream: %+v", ev.TCP)
	}
}

func TestPlainHTTPUpstreamDown(t *testing.T) {
	h := startProxy(t, nil)
	addr := testnet.FreeAddr(t)
	pu, _ := url.Parse("http://" + h.addr)
	cl := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	resp, err := cl.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	cl.CloseIdleConnections()
	ev := h.event()
	if !strings.Contains(ev.Error, "refused") || len(ev.Upstreams) != 1 || ev.Upstreams[0].Error == "" {
		t.Errorf("error=%q upstreams=%+v", ev.Error, ev.Upstreams)
	}
}

func TestBadInput(t *testing.T) {
	h := startProxy(t, func(c *config.Config) {
		c.Limits.HeaderTimeout = 300 * time.Millisecond
		c.Limits.MaxHeaderBytes = 4 << 10
	})
	for _, tc := range []struct {
		name, send, want string
	}{
		{"garbage request line", "\x16\x03\x01\x02\x00garbage\r\n\r\n", "400 Bad Request"},
		{"huge headers", "GET http://example.invalid/ HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "431"},
		{"slow client", "CONNECT 127.0.0.1:1 HTTP/1.1\r\n", ""},
		{"not a proxy request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write([]byte(tc.send))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if tc.want == "" {
				if err == nil {
					t.Errorf("slow client got %q, want the connection closed", line)
				}
			} else if !strings.Contains(line, tc.want) {
				t.Errorf("reply %q, %v; want %q", line, err, tc.want)
			}
			c.Close()
			if tc.name == "not a proxy request" {
				if ev := h.event(); !strings.Contains(ev.Error, "absolute URL") {
					t.Errorf("event error %q", ev.Error)
				}
			} else {
				h.event() // every connection has its event
			}
		})
	}
}

func TestAccessControl(t *testing.T) {
	target := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	for _, tc := range []struct {
		name   string
		edit   func(*config.Config)
		target string
		header string
		want   int
	}{
		// A client on the proxy's own host may always use it (it could reach
		// anything anyway); TestRemoteClientNotAllowed refuses one from elsewhere.
		{"loopback client outside the allow list", func(c *config.Config) { c.Access.AllowClients = []string{"10.0.0.0/8"} }, target, "", 200},
		{"client allowed", func(c *config.Config) { c.Access.AllowClients = []string{"127.0.0.0/8"} }, target, "", 200},
		{"auth missing", func(c *config.Config) { c.Access.Username, c.Access.Password = "qa", "secret" }, target, "", 407},
		{"auth wrong", func(c *config.Config) { c.Access.Username, c.Access.Password = "qa", "secret" }, target, basic("qa", "nope"), 407},
		{"auth right", func(c *config.Config) { c.Access.Username, c.Access.Password = "qa", "secret" }, target, basic("qa", "secret"), 200},
		{"denied destination", func(c *config.Config) { c.Access.DenyDestinations = []string{"127.0.0.0/8"} }, target, "", 403},
		{"self", nil, "", "", 403},
		{"self by name", nil, "localhost", "", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startProxy(t, tc.edit)
			tgt := tc.target
			switch tgt {
			case "":
				tgt = h.addr
			case "localhost":
				_, port, _ := net.SplitHostPort(h.addr)
				tgt = "localhost:" + port
			}
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", tgt, tgt, tc.header)
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == 407 && resp.Header.Get("Proxy-Authenticate") == "" {
				t.Error("407 without Proxy-Authenticate")
			}
			c.Close()
			ev := h.event()
			if tc.want != 200 && ev.Error == "" {
				t.Errorf("refused connection's event has no error: %+v", ev)
			}
		})
	}
}

func basic(u, p string) string {
	return "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) + "\r\n"
}

// TestShutdownWritesOpenTunnels cancels the proxy with a tunnel open: the
// tunnel is cut after the grace period and its event still written.
func TestShutdownWritesOpenTunnels(t *testing.T) {
	h := startProxy(t, func(c *config.Config) { c.Limits.ShutdownGrace = 200 * time.Millisecond })
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	c := h.connect(addr)
	defer c.Close()
	echo(t, c, []byte("x"))
	h.cancel()
	ev := h.event()
	if ev.TCP == nil || ev.TCP.Timeout != "shutdown" {
		t.Errorf("tcp = %+v, want timeout shutdown", ev.TCP)
	}
	_ = context.Canceled
}

// TestPlainHTTPUpgrade relays a protocol upgrade (as WebSocket does) and
// the bytes after it.
func TestPlainHTTPUpgrade(t *testing.T) {
	h := startProxy(t, nil)
	addr := tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		line, _ := br.ReadString('\n')
		_, _ = io.WriteString(c, "echo "+line)
	})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://%s/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", addr, addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprint(c, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
		t.Fatalf("after the upgrade: %q %v", line, err)
	}
	c.Close()
	if ev := h.event(); len(ev.HTTP) != 1 || ev.HTTP[0].Status != http.StatusSwitchingProtocols {
		t.Errorf("event http %+v", ev.HTTP)
	}
}
