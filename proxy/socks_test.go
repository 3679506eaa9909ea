package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
)

// socksProxy starts a proxy with a SOCKS5 listener; it returns the harness
// and the SOCKS address.
func socksProxy(t *testing.T, edit func(*config.Config)) (*harness, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := startProxyWith(t, edit, Options{SOCKS: ln})
	return h, ln.Addr().String()
}

// TestSOCKS5Curl: curl --socks5-hostname through the SOCKS listener, with
// proxy auth right and wrong; the stream goes through the same pipeline
// (a TLS tunnel, its hello read) and its event says source socks5.
func TestSOCKS5Curl(t *testing.T) {
	curl := testtool.Need(t, "curl")
	h, socks := socksProxy(t, func(c *config.Config) { c.Access.Username, c.Access.Password = "qa", "secret" })
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "over socks") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{h.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256})}}
	srv.StartTLS()
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	cafile := h.ca.WriteCert(t)
	out, err := exec.Command(curl, "-sS", "--noproxy", "", "--socks5-hostname", socks, "-U", "qa:secret", "--cacert", cafile, url).CombinedOutput()
	if err != nil || string(out) != "over socks" {
		t.Fatalf("curl over SOCKS5: %q %v", out, err)
	}
	ev := h.event()
	if ev.Source != event.SourceSOCKS5 || ev.Kind != event.KindTunnel || ev.TLS == nil || ev.TLS.SNI != "localhost" || ev.TCP.ConnectMS == nil {
		t.Errorf("source=%s kind=%s tls=%v tcp=%+v", ev.Source, ev.Kind, ev.TLS, ev.TCP)
	}
	out, err = exec.Command(curl, "-sS", "--noproxy", "", "--socks5-hostname", socks, "-U", "qa:wrong", "--cacert", cafile, url).CombinedOutput()
	if err == nil {
		t.Fatalf("wrong password accepted: %q", out)
	}
	if ev := h.event(); ev.Source != event.SourceSOCKS5 || !strings.Contains(ev.Error, "qa") {
		t.Errorf("refused: source=%s error=%q", ev.Source, ev.Error)
	}
}

// TestSOCKS5Refusals: UDP ASSOCIATE and BIND get "command not supported",
// SOCKS4 its own rejection; each leaves an event.
func TestSOCKS5Refusals(t *testing.T) {
	h, socks := socksProxy(t, nil)
	for _, tc := range []struct {
		name  string
		send  []byte
		reply []byte
	}{
		{"UDP ASSOCIATE", []byte{5, 1, 0, 5, 3, 0, 1, 127, 0, 0, 1, 0, 53}, []byte{5, 0, 5, 7}},
		{"BIND", []byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80}, []byte{5, 0, 5, 7}},
		{"SOCKS4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 'u', 0}, []byte{0, 0x5b}},
		// Names held to what a CONNECT target may be: general failure.
		{"numeric name 127.1", append([]byte{5, 1, 0, 5, 1, 0, 3, 5}, "127.1\x00\x50"...), []byte{5, 0, 5, 1}},
		{"space in a name", append([]byte{5, 1, 0, 5, 1, 0, 3, 3}, "a b\x00\x50"...), []byte{5, 0, 5, 1}},
		{"port 0", []byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 0}, []byte{5, 0, 5, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", socks)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = c.Write(tc.send)
			got := make([]byte, len(tc.reply))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != string(tc.reply) {
				t.Errorf("reply % x, %v; want % x", got, err, tc.reply)
			}
			if ev := h.event(); ev.Source != event.SourceSOCKS5 || ev.Error == "" {
				t.Errorf("event source=%s error=%q", ev.Source, ev.Error)
			} else {
				t.Logf("event error: %s", ev.Error)
			}
		})
	}
}

// TestSOCKS5Chromium: Chromium with --proxy-server=socks5:// loads a page
// through the SOCKS listener (it sends the name, the proxy resolves it).
func TestSOCKS5Chromium(t *testing.T) {
	chromium := testtool.Need(t, "chromium")
	h, socks := socksProxy(t, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<html><body>reached over socks</body></html>")
	}))
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--proxy-server=socks5://"+socks, "--proxy-bypass-list=<-loopback>", "--dump-dom", url).Output()
	if err != nil || !strings.Contains(string(out), "reached over socks") {
		t.Fatalf("chromium over SOCKS5: %v\n%s", err, out)
	}
	// Chromium may open more than one connection; one of them carried the page.
	for {
		ev := h.event()
		if ev.Source != event.SourceSOCKS5 {
			t.Fatalf("event source %q", ev.Source)
		}
		if ev.Target == strings.TrimPrefix(url, "http://") && ev.TCP != nil && ev.TCP.BytesDown > 0 {
			break
		}
	}
}

// TestSOCKS5MaxConnections: over limits.max_connections a SOCKS client
// gets a general failure, and the event names the limit, as an HTTP
// client's does.
func TestSOCKS5MaxConnections(t *testing.T) {
	h, socks := socksProxy(t, func(c *config.Config) { c.Limits.MaxConnections = 1 })
	first, err := net.Dial("tcp", socks) // holds the one slot
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c, err := net.Dial("tcp", socks)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	got := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string([]byte{5, 0, 5, 1}) {
		t.Errorf("reply % x, %v; want 05 00 05 01 (general failure)", got, err)
	}
	if ev := h.event(); ev.Limit != "limits.max_connections" || !strings.Contains(ev.Error, "max_connections") {
		t.Errorf("refused connection's event: limit %q error %q", ev.Limit, ev.Error)
	}
	_ = first.Close()
	h.event()
}
