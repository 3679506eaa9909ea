package onboard_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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

// counter counts the proxy's client connections that started a request.
type counter struct{ n atomic.Int32 }

func (c *counter) ConnOpened(string)       { c.n.Add(1) }
func (c *counter) ConnClosed(*event.Event) {}

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

	opened := &counter{}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	srv, err := proxy.New(cfg, proxy.Options{Log: zap.NewNop(), Sink: event.NewWriter(io.Discard), Observer: opened})
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
		w.Write(onboard.PAC([]string{ln.Addr().String()}, []string{"*.test"}))
	}))
	defer pac.Close()

	b := chromium.New(t, map[string]any{
		"proxy-pac-url": pac.URL + "/proxy.pac",
		// Chromium sends loopback directly unless told otherwise.
		"proxy-bypass-list": "<-loopback>",
		// Only Chromium can resolve direct.test: through the proxy it
		// would fail, so reaching the server proves it went DIRECT.
		"host-resolver-rules": "MAP direct.test 127.0.0.1",
	})
	b.Do(20*time.Second, chromedp.Navigate("http://127.0.0.1:"+port+"/via"), chromedp.WaitVisible(chromedp.CSS("#ok")))
	if opened.n.Load() == 0 {
		t.Error("the PAC file did not send the request through the proxy")
	}
	before := opened.n.Load()
	b.Do(20*time.Second, chromedp.Navigate("http://direct.test:"+port+"/direct"), chromedp.WaitVisible(chromedp.CSS("#ok")))
	mu.Lock()
	defer mu.Unlock()
	if !seen["/via"] || !seen["/direct"] {
		t.Errorf("the server saw %v", seen)
	}
	if opened.n.Load() != before {
		t.Error("a host matching pac_direct went through the proxy")
	}
}
