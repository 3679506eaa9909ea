package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is stderr shared by serve's goroutines and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveWith runs serve with args until the test ends; it returns stderr
// once the proxy listens.
func serveWith(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	stderr := &syncBuffer{}
	ready := make(chan net.Addr, 1)
	cmd := newServe(stderr, func(a net.Addr) { ready <- a })
	cmd.SetArgs(append([]string{"--listen", "127.0.0.1:0", "--events", filepath.Join(t.TempDir(), "e.jsonl")}, args...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, stderr.String())
	}
	return stderr
}

var consoleURL = regexp.MustCompile(`live console\s+\{"url": "(http://127\.0\.0\.1:\d+/)"\}`)

func TestServeStartsTheConsole(t *testing.T) {
	stderr := serveWith(t, "--ui", "127.0.0.1:0")
	m := consoleURL.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no console URL printed:\n%s", stderr.String())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "inspectproxy-token") || !strings.Contains(string(b), `href="/setup/"`) {
		t.Errorf("console page: %d\n%.300s", resp.StatusCode, b)
	}
	resp, err = http.Get(m[1] + "setup/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" {
		t.Errorf("setup page's PAC through the console: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(stderr.String(), "listens on loopback only") {
		t.Errorf("no word for phones:\n%s", stderr.String())
	}
}

func TestServeWithoutConsole(t *testing.T) {
	stderr := serveWith(t, "--ui", "")
	if strings.Contains(stderr.String(), "live console") {
		t.Errorf("--ui \"\" still started the console:\n%s", stderr.String())
	}
}

// TestServeConsolePortTaken: the proxy starts anyway and says why the
// console did not.
func TestServeConsolePortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stderr := serveWith(t, "--ui", ln.Addr().String())
	time.Sleep(10 * time.Millisecond)
	if s := stderr.String(); !strings.Contains(s, "console not started") || consoleURL.MatchString(s) {
		t.Errorf("stderr:\n%s", s)
	}
}
