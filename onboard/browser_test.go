package onboard_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/chromium"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/onboard"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// TestSetupPageQR opens the setup page in Chromium and decodes its QR
// code from a screenshot with zbarimg: a phone's camera must read the
// page's address.
func TestSetupPageQR(t *testing.T) {
	ca := testpki.NewCA(t, "inspectproxy test CA")
	h, err := onboard.New(onboard.Options{Proxies: []string{"192.0.2.10:8080"}, CA: ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	b := chromium.New(t, nil)
	b.Do(20*time.Second, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS(".qr svg")))
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(".qr")))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b.Dir, "qr.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zbarimg", "--raw", "-q", path).Output() // stderr has D-Bus noise
	if err != nil || strings.TrimSpace(string(out)) != "http://192.0.2.10:8080/" {
		t.Errorf("zbarimg: %v %q, want the page's address", err, out)
	}
	b.Screenshot("setup")
	if got := chromium.Eval[string](b, `document.querySelector("#dl-profile").getAttribute("href")`); got != "inspectproxy.mobileconfig" {
		t.Errorf("profile link %q", got)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// urls records the request URLs of the proxy's finished events.
type urls struct {
	mu   sync.Mutex
	seen []string
}

func (u *urls) ConnOpened(string) {}

func (u *urls) ConnClosed(ev *event.Event) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, h := range ev.HTTP {
		u.seen = append(u.seen, h.URL)
	}
}

func (u *urls) list() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.seen, " ")
}

// notLoopback is every address but 127.0.0.0/8 and ::1: the complement
// of each, one prefix per bit.
var notLoopback = append(complement(netip.MustParsePrefix("127.0.0.0/8")), complement(netip.MustParsePrefix("::1/128"))...)

func complement(p netip.Prefix) []string {
	var out []string
	a := p.Addr().AsSlice()
	for i := range p.Bits() {
		b := append([]byte(nil), a...)
		b[i/8] ^= 0x80 >> (i % 8)
		addr, _ := netip.AddrFromSlice(b)
		q, _ := addr.Prefix(i + 1)
		out = append(out, q.String())
	}
	return out
}

// TestPACInChromium has Chromium's PAC engine evaluate the file: a URL goes
// through the real proxy, a host matching a direct glob does not.
func TestPACInChromium(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = true
		mu.Unlock()
		io.WriteString(w, "<!doctype html><title>ok</title><link rel=icon href=data:,><p id=ok>ok</p>")
	}))
	defer web.Close()
	_, port, _ := net.SplitHostPort(web.Listener.Addr().String())

	proxied := &urls{}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	// Chromium's own background requests follow the PAC file too: the
	// proxy connects nowhere but loopback.
	cfg.Access.DenyDestinations = notLoopback
	srv, err := proxy.New(cfg, proxy.Options{Log: zap.NewNop(), Sink: discard{}, Observers: []proxy.Observer{proxied}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, nil) }()
	defer func() { cancel(); <-served }()

	pac := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", onboard.TypePAC)
		w.Write(onboard.PAC([]string{ln.Addr().String()}, []string{"*.direct.test"}))
	}))
	defer pac.Close()

	// Chromium never asks the PAC file about loopback URLs, so both URLs
	// use names under .test that only Chromium resolves (to the test
	// server): one the PAC file sends DIRECT, which reaches the server;
	// one it sends through the proxy, which cannot resolve it and answers
	// 502, and whose event shows that the request came to it.
	b := chromium.New(t, map[string]any{
		"proxy-pac-url":       pac.URL + "/proxy.pac",
		"host-resolver-rules": "MAP www.direct.test 127.0.0.1, MAP via.proxied.test 127.0.0.1",
	})
	b.Do(20*time.Second, chromedp.Navigate("http://via.proxied.test:"+port+"/via"))
	b.Do(20*time.Second, chromedp.Navigate("http://www.direct.test:"+port+"/direct"), chromedp.WaitVisible(chromedp.CSS("#ok")))
	mu.Lock()
	if seen["/via"] || !seen["/direct"] {
		t.Errorf("the server saw %v; want /direct only", seen)
	}
	mu.Unlock()
	// Closing the browser closes its connections to the proxy, whose
	// events then say which requests it carried.
	if err := chromedp.Cancel(b.Ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(proxied.list(), "/via") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := proxied.list(); !strings.Contains(got, "http://via.proxied.test:"+port+"/via") || strings.Contains(got, "/direct") {
		t.Errorf("requests through the proxy: %s; want /via and not /direct", got)
	}
}

// discard is an events sink that keeps nothing: the tests read the
// proxy's events through an Observer.
type discard struct{}

func (discard) Write(*event.Event) error { return nil }
