package socks5

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/stream"
)

// server is a small SOCKS5 proxy on loopback built on this package, as
// the pipeline will use it: Handshake, dial, WriteReply, relay.
type server struct {
	addr string
	seen chan seen // each handshake's outcome
}

type seen struct {
	req *Request
	err error
}

func startServer(t *testing.T, cfg Config) *server {
	t.Helper()
	s := &server{seen: make(chan seen, 16)}
	s.addr = testnet.Listen(t, "127.0.0.1:0", func(c net.Conn) { s.handle(c, cfg) }).Addr().String()
	return s
}

func (s *server) handle(c net.Conn, cfg Config) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := Handshake(c, cfg)
	select {
	case s.seen <- seen{req, err}:
	default: // nobody is looking (a browser's background requests)
	}
	if err != nil {
		return
	}
	up, err := net.DialTimeout("tcp", req.Target(), 5*time.Second)
	if err != nil {
		_ = WriteReply(c, ReplyFor(stream.Refusal{Reason: stream.Unreachable, Err: err}), netip.AddrPort{})
		return
	}
	defer up.Close()
	if err := WriteReply(c, Succeeded, up.LocalAddr().(*net.TCPAddr).AddrPort()); err != nil {
		return
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); close(done) }()
	_, _ = io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// next is the outcome of the next handshake.
func (s *server) next(t *testing.T) seen {
	t.Helper()
	select {
	case got := <-s.seen:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake")
		return seen{}
	}
}

func backend(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from "+r.Host) }))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().(*net.TCPAddr).AddrPort().String()
}

func curl(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "10"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// TestCurl drives the server with curl, the peer client, in every way it
// speaks SOCKS: names resolved by the proxy (ATYP domain) or by curl
// (IPv4, IPv6), with and without RFC 1929 credentials, and SOCKS4/4a.
func TestCurl(t *testing.T) {
	v4 := backend(t, "127.0.0.1:0")
	v6 := backend(t, "[::1]:0")
	_, port, _ := net.SplitHostPort(v4)
	open := startServer(t, Config{})
	authed := startServer(t, Config{Username: "alice", Password: "s3cret"})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name     string
		srv      *server
		args     []string
		body     string // wanted body, or "" for a failure
		stderr   string // curl's words for the failure
		wantReq  string // the request the server read: "CMD host:port"
		wantUser string
		errIs    error
		literal  bool // the request carried an address (ATYP 1 or 4), not a name
	}{
		{name: "socks5-hostname", srv: open, args: []string{"--socks5-hostname", open.addr, "http://localhost:" + port + "/"},
			body: "hello from localhost:" + port, wantReq: "CONNECT localhost:" + port},
		{name: "socks5 IPv4", srv: open, args: []string{"--socks5", open.addr, "http://" + v4 + "/"},
			body: "hello from " + v4, wantReq: "CONNECT " + v4, literal: true},
		{name: "socks5 IPv6", srv: open, args: []string{"--socks5", open.addr, "http://" + v6 + "/"},
			body: "hello from " + v6, wantReq: "CONNECT " + v6, literal: true},
		{name: "socks5h URL with credentials", srv: authed, args: []string{"-x", "socks5h://alice:s3cret@" + authed.addr, "http://localhost:" + port + "/"},
			body: "hello from localhost:" + port, wantReq: "CONNECT localhost:" + port, wantUser: "alice"},
		{name: "-U right", srv: authed, args: []string{"--socks5", authed.addr, "-U", "alice:s3cret", "http://" + v4 + "/"},
			body: "hello from " + v4, wantReq: "CONNECT " + v4, wantUser: "alice", literal: true},
		{name: "-U wrong password", srv: authed, args: []string{"--socks5", authed.addr, "-U", "alice:guess", "http://" + v4 + "/"},
			stderr: "rejected", errIs: ErrAuth},
		{name: "no credentials where they are required", srv: authed, args: []string{"--socks5", authed.addr, "http://" + v4 + "/"},
			stderr: "No authentication method was acceptable", errIs: ErrNoMethod},
		{name: "socks4 refused", srv: open, args: []string{"--socks4", open.addr, "http://" + v4 + "/"},
			stderr: "rejected", errIs: ErrSOCKS4, wantReq: "CONNECT " + v4},
		{name: "socks4a refused", srv: open, args: []string{"--socks4a", open.addr, "http://localhost:" + port + "/"},
			stderr: "rejected", errIs: ErrSOCKS4, wantReq: "CONNECT localhost:" + port},
		{name: "connection refused upstream", srv: open, args: []string{"--socks5", open.addr, "http://" + closedAddr + "/"},
			stderr: "(5)", wantReq: "CONNECT " + closedAddr}, // curl prints the reply code: 5, connection refused
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := curl(t, tc.args...)
			if tc.body != "" {
				if err != nil || out != tc.body {
					t.Fatalf("curl: %v, %q, stderr %q; want %q", err, out, stderr, tc.body)
				}
			} else if err == nil || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("curl: %v, stderr %q; want a failure saying %q", err, stderr, tc.stderr)
			}
			got := tc.srv.next(t)
			if tc.errIs != nil && !errors.Is(got.err, tc.errIs) {
				t.Errorf("server error %v, want %v", got.err, tc.errIs)
			}
			if tc.wantReq != "" && (got.req == nil || fmt.Sprintf("%s %s", got.req.Command, got.req.Target()) != tc.wantReq) {
				t.Errorf("server read %+v, want %s", got.req, tc.wantReq)
			}
			if tc.body != "" && (got.req.User != tc.wantUser || got.req.Addr.IsValid() != tc.literal) {
				t.Errorf("request %+v, want user %q, address given %v", got.req, tc.wantUser, tc.literal)
			}
		})
	}
}

// TestChromium: the browser as a SOCKS5 client (--proxy-server=socks5://),
// which sends host names for the proxy to resolve.
func TestChromium(t *testing.T) {
	v4 := backend(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(v4)
	srv := startServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--proxy-server=socks5://"+srv.addr, "--proxy-bypass-list=<-loopback>", "--dump-dom", "http://localhost:"+port+"/").Output()
	if err != nil || !strings.Contains(string(out), "hello from localhost:"+port) {
		t.Fatalf("chromium: %v: %s", err, out)
	}
	for {
		got := srv.next(t)
		if got.err == nil && got.req.Command == Connect && got.req.Target() == "localhost:"+port && !got.req.Addr.IsValid() {
			return
		}
	}
}
