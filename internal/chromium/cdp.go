package chromium

// Browser drives a live page through chromedp (the DevTools protocol):
// one headless Chromium per test, with what the page logged to its
// console kept for the test to check, and screenshots in a directory that
// is kept when the test fails. Screenshot and DumpDOM above suffice for a
// static file; Browser is for pages that change (the live console).

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium tab.
type Browser struct {
	Ctx context.Context
	// Dir holds the screenshots; it is kept when the test fails.
	Dir string
	t   testing.TB

	mu   sync.Mutex
	logs []chromedp.ConsoleMessage
}

// New starts Chromium with a 1400×900 window and the given extra flags
// (e.g. proxy-pac-url), and stops it when the test ends.
func New(t testing.TB, flags map[string]any) *Browser {
	t.Helper()
	dir, err := os.MkdirTemp("", "inspectproxy-browser-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshots and the browser profile are in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Path), chromedp.NoSandbox, chromedp.WindowSize(1400, 900),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
	)
	for k, v := range flags {
		opts = append(opts, chromedp.Flag(k, v))
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	b := &Browser{Ctx: ctx, Dir: dir, t: t}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.logs = append(b.logs, m)
			b.mu.Unlock()
		}
	}()
	return b
}

// Do runs actions with a time limit, failing the test (after a
// screenshot) when one fails.
func (b *Browser) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.Screenshot("failure")
		b.t.Fatalf("chromium: %v", err)
	}
}

// Eval evaluates a JavaScript expression into T.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("chromium: evaluate %s: %v", expr, err)
	}
	return v
}

// Screenshot saves the viewport as Dir/name.png and returns the path.
func (b *Browser) Screenshot(name string) string {
	ctx, cancel := context.WithTimeout(b.Ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(b.Dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
	return p
}

// Errors are the console messages that are errors: exceptions, console.error
// calls and the browser's error log (failed loads, CSP violations).
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.logs {
		if m.IsException() || strings.EqualFold(string(m.Type), "error") || m.Type == "assert" {
			out = append(out, m.String())
		}
	}
	return out
}
