package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
)

// rawRequest sends raw bytes to the proxy, optionally half-closes, and
// returns the first response.
func rawRequest(t *testing.T, addr, send string, halfClose bool) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, send); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response to %q: %v", send[:min(len(send), 60)], err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// echoHeaders is an upstream that answers with the request's header names.
func echoHeaders(t *testing.T) string {
	t.Helper()
	return tcpServer(t, func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			var names []string
			for k := range req.Header {
				names = append(names, k)
			}
			body := strings.Join(sortedStrings(names), ",")
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Hop: secret\r\nConnection: X-Hop\r\n\r\n%s", len(body), body)
		}
	})
}

func sortedStrings(s []string) []string {
	h := http.Header{}
	for _, k := range s {
		h[k] = nil
	}
	return sortedKeys(h)
}

// Finding 4: a client that half-closes after its request (RFC 9112 allows
// it; nc -N does it) gets its response, not 502 "context canceled".
func TestPlainHTTPHalfClose(t *testing.T) {
	h := startProxy(t, nil)
	addr := echoHeaders(t)
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		resp, body := rawRequest(t, h.addr, fmt.Sprintf("GET http://%s/x %s\r\nHost: %s\r\n\r\n", addr, proto, addr), true)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s half-closed client: %d %q", proto, resp.StatusCode, body)
		}
		if ev := h.event(); ev.Error != "" || len(ev.HTTP) != 1 || ev.HTTP[0].Status != 200 {
			t.Errorf("%s event: error=%q http=%+v", proto, ev.Error, ev.HTTP)
		}
	}
}

// Finding 7: headers named in Connection are this hop's only (RFC 9110
// §7.6.1), both ways.
func TestConnectionNamedHeadersStripped(t *testing.T) {
	h := startProxy(t, nil)
	addr := echoHeaders(t)
	resp, body := rawRequest(t, h.addr, fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nX-Kept: 2\r\nKeep-Alive: timeout=5\r\n\r\n", addr, addr), true)
	if strings.Contains(body, "X-Secret") || strings.Contains(body, "Keep-Alive") || !strings.Contains(body, "X-Kept") {
		t.Errorf("upstream saw headers %q: X-Secret and Keep-Alive must go, X-Kept stay", body)
	}
	if resp.Header.Get("X-Hop") != "" {
		t.Errorf("the response's Connection-named header reached the client: %v", resp.Header)
	}
	h.event()
}

// Finding 8: OPTIONS * is answered by the proxy's handler, after proxy auth.
func TestOptionsStarNeedsAuth(t *testing.T) {
	h := startProxy(t, func(c *config.Config) { c.Access.Username, c.Access.Password = "qa", "secret" })
	resp, _ := rawRequest(t, h.addr, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", false)
	if resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("OPTIONS * without auth: %d, want 407", resp.StatusCode)
	}
	h.event()
	resp, _ = rawRequest(t, h.addr, "OPTIONS * HTTP/1.1\r\nHost: x\r\n"+basic("qa", "secret")+"\r\n", true)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("OPTIONS * with auth: %d, want 200", resp.StatusCode)
	}
	h.event()
}

// Finding 10: a connection that never got a request through says why, and
// names the target it asked for when it named one.
func TestUnservedConnectionsDescribed(t *testing.T) {
	h := startProxy(t, func(c *config.Config) {
		c.Limits.HeaderTimeout = 300 * time.Millisecond
		c.Limits.MaxHeaderBytes = 4 << 10
	})
	for _, tc := range []struct {
		name, send, target, errPart, limit string
	}{
		{"431", "GET http://big.example/ HTTP/1.1\r\nHost: big.example\r\nX: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", "big.example:80", "limits.max_header_bytes", "limits.max_header_bytes"},
		{"400", "GET http://bad.example/ HTTP/1.1\r\nHost: bad.example\r\nbroken header line\r\n\r\n", "bad.example:80", "answered 400", ""},
		{"header timeout", "CONNECT slow.example:443 HTTP/1.1\r\n", "slow.example:443", "limits.header_timeout", "limits.header_timeout"},
		{"nothing sent", "", "", "without sending a request", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(c, tc.send)
			if tc.send == "" {
				c.Close()
			} else {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.ReadAll(c)
				c.Close()
			}
			ev := h.event()
			if ev.Target != tc.target || !strings.Contains(ev.Error, tc.errPart) || ev.Limit != tc.limit {
				t.Errorf("target=%q error=%q limit=%q; want %q, ~%q, %q", ev.Target, ev.Error, ev.Limit, tc.target, tc.errPart, tc.limit)
			}
		})
	}
}

// Finding 2: one client connection cannot open unlimited upstream
// connections: past the open cap idle ones are closed; past the life cap
// it gets 503 and the event names the bound.
func TestUpstreamBoundsPerClient(t *testing.T) {
	h := startProxy(t, func(c *config.Config) {
		c.Limits.MaxUpstreamsOpen = 4
		c.Limits.MaxUpstreamsPerClient = 10
	})
	// Ten upstream servers: each request goes to another host:port.
	var addrs []string
	for range 12 {
		addrs = append(addrs, echoHeaders(t))
	}
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	before := testnet.OpenFDs(t)
	var codes []int
	for _, a := range addrs {
		fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", a, a)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break // the proxy closed the connection after the 503
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		// Each upstream connection is two fds in this process: the proxy's
		// socket and the test server's.
		if n := testnet.OpenFDs(t) - before; n > 2*4+2 {
			t.Errorf("after %d hosts %d more fds are open, want at most twice max_upstreams_open (4) and a little", len(codes), n)
		}
	}
	want := "200 200 200 200 200 200 200 200 200 200 503"
	if got := strings.Trim(fmt.Sprint(codes), "[]"); got != want {
		t.Errorf("statuses %s, want %s", got, want)
	}
	c.Close()
	ev := h.event()
	if ev.Limit != "limits.max_upstreams_per_client_life" || len(ev.Upstreams) != 10 || !strings.Contains(ev.Error, "limits.max_upstreams_per_client_life (10)") {
		t.Errorf("limit=%q upstreams=%d error=%q", ev.Limit, len(ev.Upstreams), ev.Error)
	}
}

// Finding 3: one connection's event stays bounded: long URLs are cut (the
// length kept), requests past the cap are counted, and the event says so.
func TestEventBounds(t *testing.T) {
	h := startProxy(t, func(c *config.Config) {
		c.Limits.MaxRecordedRequests = 20
		c.Limits.MaxURLBytes = 256
		c.Limits.MaxHeaderBytes = 128 << 10
	})
	addr := echoHeaders(t)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	long := strings.Repeat("a", 60<<10)
	const n = 50
	go func() { // pipelined, as in the finding
		w := bufio.NewWriter(c)
		for range n {
			fmt.Fprintf(w, "GET http://%s/%s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, long, addr)
		}
		_ = w.Flush()
	}()
	br := bufio.NewReader(c)
	for i := range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c.Close()
	ev := h.event()
	if len(ev.HTTP) != 20 || !ev.Truncated || ev.Cut == nil || ev.Cut.HTTP != 30 || ev.Cut.URLs != 20 {
		t.Fatalf("http=%d truncated=%v cut=%+v", len(ev.HTTP), ev.Truncated, ev.Cut)
	}
	if u := ev.HTTP[0]; len(u.URL) != 256 || u.URLLength != len("http://"+addr+"/"+long) {
		t.Errorf("url kept %d bytes, url_length %d", len(u.URL), u.URLLength)
	}
}

// A request's headers are recorded, secrets redacted unless asked for.
func TestHeadersRecorded(t *testing.T) {
	h := startProxy(t, nil)
	addr := echoHeaders(t)
	rawRequest(t, h.addr, fmt.Sprintf("GET http://%s/ HTTP/1.1\r\nHost: %s\r\nCookie: session=s3cr3t\r\nUser-Agent: test\r\n\r\n", addr, addr), true)
	ev := h.event()
	if len(ev.HTTP) != 1 {
		t.Fatalf("http %+v", ev.HTTP)
	}
	got := map[string]string{}
	for _, hd := range ev.HTTP[0].RequestHeaders {
		got[hd.Name] = hd.Value
	}
	if got["Cookie"] != "[redacted]" || got["User-Agent"] != "test" || got["Host"] != addr {
		t.Errorf("request headers %+v", ev.HTTP[0].RequestHeaders)
	}
	if ev.HTTP[0].RequestHeadersSize == 0 || len(ev.HTTP[0].ResponseHeaders) == 0 {
		t.Errorf("sizes and response headers: %+v", ev.HTTP[0])
	}
}

// Finding 10: a tunnel whose client sent a truncated record before the
// stream was cut says so, not "the client sent no data".
func TestTruncatedHelloDescribed(t *testing.T) {
	h := startProxy(t, func(c *config.Config) { c.Limits.IdleTimeout = 200 * time.Millisecond })
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	c := h.connect(addr)
	_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}) // a record header and one byte
	_, _ = io.ReadAll(c)                                       // until the idle cut
	c.Close()
	ev := h.event()
	if ev.TCP.BytesUp != 6 || !strings.Contains(ev.TLSAbsent, "6 bytes") {
		t.Errorf("bytes_up=%d tls_absent=%q", ev.TCP.BytesUp, ev.TLSAbsent)
	}
}

// capture.ignore_hosts: a stream to an ignored host is relayed and leaves
// no event; the next one, in scope, does.
func TestCaptureScope(t *testing.T) {
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	_, port, _ := net.SplitHostPort(addr)
	h := startProxy(t, func(c *config.Config) { c.Capture.IgnoreHosts = []string{"localhost"} })
	c := h.connect("localhost:" + port)
	echo(t, c, []byte("not recorded"))
	c.Close()
	c = h.connect(addr)
	echo(t, c, []byte("recorded"))
	c.Close()
	if ev := h.event(); ev.Target != addr {
		t.Errorf("first event is for %s, want %s (the ignored host leaves none)", ev.Target, addr)
	}
}
