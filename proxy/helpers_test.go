package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testtool.IgnoreRSTWatch)
}

// sink collects events; it is the real Sink interface over a channel.
type sink struct{ ch chan *event.Event }

func (s *sink) Write(ev *event.Event) error { s.ch <- ev; return nil }

// harness is a running proxy on loopback.
type harness struct {
	t      testing.TB
	addr   string
	events *sink
	cancel context.CancelFunc
	done   chan error
	ca     *testpki.CA
}

// startProxy runs a proxy with cfg edited by edit, trusting a fresh test CA.
func startProxy(t testing.TB, edit func(*config.Config)) *harness {
	t.Helper()
	return startProxyWith(t, edit, Options{})
}

// startProxyWith is startProxy with options (MITM, checker); the log and
// sink are the harness's.
func startProxyWith(t testing.TB, edit func(*config.Config), o Options) *harness {
	t.Helper()
	ca := testpki.NewCA(t, "inspectproxy test root")
	rootFile := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS.ExtraRoots = []string{rootFile}
	cfg.Limits.ShutdownGrace = 2 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	h := &harness{t: t, events: &sink{ch: make(chan *event.Event, 64)}, done: make(chan error, 1), ca: ca}
	if o.Log == nil {
		o.Log = zaptest.NewLogger(t)
	}
	o.Sink = h.events
	srv, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	ready := make(chan string, 1)
	go func() { h.done <- srv.Run(ctx, func(a net.Addr) { ready <- a.String() }) }()
	select {
	case h.addr = <-ready:
	case err := <-h.done:
		t.Fatalf("proxy did not start: %v", err)
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("proxy Run: %v", err)
	}
}

// event waits for the next event.
func (h *harness) event() *event.Event {
	h.t.Helper()
	select {
	case ev := <-h.events.ch:
		return ev
	case <-time.After(15 * time.Second):
		h.t.Fatal("no event within 15s")
		return nil
	}
}

// connect opens a tunnel through the proxy and returns the raw connection
// after the 200.
func (h *harness) connect(target string) *net.TCPConn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(&oneByteReader{c}), &http.Request{Method: http.MethodConnect})
	if err != nil {
		h.t.Fatalf("CONNECT reply: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		h.t.Fatalf("CONNECT %s: %s %s", target, resp.Status, body)
	}
	return c.(*net.TCPConn)
}

// oneByteReader keeps bufio from reading past the CONNECT reply, so the
// tunnel's first bytes stay on the connection.
type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// tcpServer is a plain TCP server on loopback running handle per connection.
func tcpServer(t testing.TB, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		handle(c.(*net.TCPConn))
	})
	return ln.Addr().String()
}

func tlsServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// tlsThrough runs a TLS client through a tunnel to addr: handshake, one
// echo, then a client-first close (our FIN without close_notify, which
// would race the server's close against our FIN), waiting for the server's.
func (h *harness) tlsThrough(addr string, cfg *tls.Config) {
	h.t.Helper()
	raw := h.connect(addr)
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		h.t.Fatalf("handshake through the proxy: %v", err)
	}
	echo(h.t, c, []byte("hello through the tunnel"))
	_ = raw.CloseWrite()
	_, _ = io.Copy(io.Discard, c)
	c.Close()
}

// get fetches url with cl and returns the body.
func get(t *testing.T, cl *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body of %s: %v", url, err)
	}
	return resp, string(b)
}
