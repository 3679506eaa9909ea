package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/chromium"
	"github.com/inspectproxy/inspectproxy/report"
)

// proxyUnderTest runs `serve` with args on a loopback port and returns its
// address and a stop function that returns once the events are written.
func proxyUnderTest(t *testing.T, events string, args ...string) (string, func()) {
	t.Helper()
	ready := make(chan net.Addr, 1)
	var stderr bytes.Buffer
	cmd := newServe(&stderr, func(a net.Addr) { ready <- a })
	cmd.SetArgs(append([]string{"--listen", "127.0.0.1:0", "--events", events, "--log-format", "json"}, args...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	select {
	case a := <-ready:
		return a.String(), func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v\n%s", err, stderr.String())
			}
		}
	case err := <-done:
		cancel()
		t.Fatalf("serve exited: %v\n%s", err, stderr.String())
	}
	return "", nil
}

// run runs a real client, bounded in time; its failure is expected for
// the noise cases, so only a missing program fails the test.
func run(t *testing.T, timeout time.Duration, name string, args ...string) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed (.ci/run installs it): %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	// Chromium forks helpers: end the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s: %v (%d bytes of output)", name, strings.Join(args, " "), err, len(out))
}

// noiseCapture drives the proxy, as it is, with the real clients of
// issue 11: a socket that connects and closes, a SOCKS5 client on the HTTP
// port (closed at the header timeout), a direct request to the proxy, a
// DNS failure, a refused connect, a request to the proxy itself (403),
// and successful curl, python and Chromium loads of a local HTTPS server.
func noiseCapture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("limits:\n  header_timeout: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<!doctype html><title>ok</title>ok")
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	good := "https://localhost:" + port + "/"
	addr, stop := proxyUnderTest(t, events, "--config", cfg)
	proxyURL := "http://" + addr
	py := fmt.Sprintf("import socket;socket.create_connection(('127.0.0.1',%s)).close()", strings.Split(addr, ":")[1])
	run(t, 10*time.Second, "python3", "-c", py)
	run(t, 10*time.Second, "curl", "-sS", "-o", "/dev/null", "-x", "socks5://"+addr, "http://example.com/")
	run(t, 10*time.Second, "curl", "-sS", "-o", "/dev/null", proxyURL+"/")
	run(t, 15*time.Second, "curl", "-sS", "-o", "/dev/null", "-x", proxyURL, "https://no-such-host.invalid/")
	run(t, 10*time.Second, "curl", "-sS", "-o", "/dev/null", "-x", proxyURL, "https://127.0.0.1:1/")
	run(t, 10*time.Second, "curl", "-sS", "-o", "/dev/null", "-x", proxyURL, proxyURL+"/")
	run(t, 10*time.Second, "curl", "-sS", "-k", "-o", "/dev/null", "-x", proxyURL, good)
	run(t, 20*time.Second, "python3", "-c", fmt.Sprintf(
		"import urllib.request,ssl;c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE;"+
			"o=urllib.request.build_opener(urllib.request.ProxyHandler({'https':'%s'}),urllib.request.HTTPSHandler(context=c));o.open('%s').read()",
		proxyURL, good))
	profile := filepath.Join(dir, "profile")
	run(t, 60*time.Second, "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+profile,
		"--proxy-server="+proxyURL, "--proxy-bypass-list=<-loopback>", "--ignore-certificate-errors", "--dump-dom", good)
	time.Sleep(200 * time.Millisecond)
	stop()
	return events
}

// TestNoiseAudit checks, on a capture the proxy made of real clients, that
// the ATS audit judges only connections that reached a server, and that
// the latency report's failures table has every other one.
func TestNoiseAudit(t *testing.T) {
	events := noiseCapture(t)

	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"ats", "report", "--json", events}, &out, &errb); code != 0 {
		t.Fatalf("ats report: %s", errb.String())
	}
	var rep ats.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	var domains []string
	for _, d := range rep.Domains {
		domains = append(domains, d.Domain)
	}
	if len(domains) != 1 || domains[0] != "localhost" {
		t.Errorf("audited domains %q: want only localhost (never \"\", the proxy, or hosts never reached)", domains)
	}
	for _, reason := range []string{"no_request", "dns", "refused", "proxy_refused"} {
		if rep.NeverConnected[reason] == 0 {
			t.Errorf("never connected %v: no %s", rep.NeverConnected, reason)
		}
	}
	out.Reset()
	if code := Main(context.Background(), []string{"ats", "report", events}, &out, &errb); code != 0 || strings.Contains(out.String(), "<key></key>") {
		t.Errorf("ats report text (exit %d) has an empty domain:\n%s", code, out.String())
	}

	out.Reset()
	if code := Main(context.Background(), []string{"report", "-q", "--format", "json", events}, &out, &errb); code != 0 {
		t.Fatalf("report: %s", errb.String())
	}
	var lat report.Report
	if err := json.Unmarshal(out.Bytes(), &lat); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, f := range lat.Failures {
		got[f.Reason] += f.Count
	}
	for _, reason := range []string{"no_request", "dns", "refused", "proxy_refused"} {
		if got[reason] == 0 {
			t.Errorf("failures table %+v: no %s", lat.Failures, reason)
		}
	}
	// Each failure counted once: errors per host never exceed its failures.
	for _, h := range lat.Hosts {
		n := 0
		for _, f := range lat.Failures {
			if f.Host == h.Name {
				n += f.Count
			}
		}
		if h.Errors > n {
			t.Errorf("%s: %d errors for %d failures", h.Name, h.Errors, n)
		}
	}
}

// measureScript runs in Chromium on a copy of the report: the rendered
// width of every TLS segment of the first waterfall with its duration, and
// for each row (its life line) whether anything is drawn on it.
const measureScript = `<script>
const out = [];
for (const r of document.querySelectorAll('#first rect.ph-tls')) {
  const m = /: tls ([0-9.]+) ms/.exec(r.textContent);
  out.push('tls ' + r.getBoundingClientRect().width.toFixed(2) + ' ' + (m ? m[1] : '?'));
}
const marks = [...document.querySelectorAll('#first rect, #first text.fail')];
for (const l of document.querySelectorAll('#first line.life')) {
  const y = l.getBoundingClientRect().top;
  const drawn = marks.some(m => { const b = m.getBoundingClientRect(); return b.top - 2 <= y && y <= b.bottom + 2 && b.width > 0; });
  out.push('row ' + (drawn ? 'drawn' : 'empty'));
}
const pre = document.createElement('pre'); pre.id = 'measure'; pre.textContent = out.join('\n'); document.body.append(pre);
</script>`

// TestWaterfallLegible renders the latency report in Chromium at 1400 px:
// every TLS handshake of 2 ms or more is drawn at least 4 px wide, and no
// row of the first waterfall is empty (failures included), with no
// console error. Two captures: the real one as recorded (seconds long),
// and its connections spread over 3 minutes, 77 of them (issue 11's
// acceptance case).
func TestWaterfallLegible(t *testing.T) {
	events := noiseCapture(t)
	for _, c := range []struct {
		name   string
		events string
	}{
		{"real capture", events},
		{"77 connections over 3 minutes", stretch(t, events, 77, 3*time.Minute)},
	} {
		t.Run(c.name, func(t *testing.T) { waterfallLegible(t, c.events) })
	}
}

// stretch writes n events made from the capture's, cycling through them,
// with fresh ids and their starts spread evenly over span.
func stretch(t *testing.T, path string, n int, span time.Duration) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := event.NewReader(f)
	defer r.Close()
	var evs []*event.Event
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		t.Fatal("empty capture")
	}
	t0 := evs[0].Start
	var out bytes.Buffer
	for i := range n {
		ev := *evs[i%len(evs)]
		ev.ID = fmt.Sprintf("stretched-%d", i)
		ev.Start = t0.Add(span * time.Duration(i) / time.Duration(n-1))
		b, err := json.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		out.Write(append(b, '\n'))
	}
	p := filepath.Join(t.TempDir(), "stretched.jsonl")
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func waterfallLegible(t *testing.T, events string) {
	page := filepath.Join(t.TempDir(), "report.html")
	var errb bytes.Buffer
	if code := Main(context.Background(), []string{"report", "-q", "--format", "html", "-o", page, events}, io.Discard, &errb); code != 0 {
		t.Fatalf("report: %s", errb.String())
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(page, bytes.Replace(b, []byte("</body>"), []byte(measureScript+"</body>"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	r := chromium.DumpDOM(t, page, 1400, 2000)
	for _, line := range r.Console {
		t.Errorf("console error: %s", line)
	}
	_, measured, ok := strings.Cut(r.DOM, `<pre id="measure">`)
	if !ok {
		t.Fatalf("the measuring script did not run:\n%.500s", r.DOM)
	}
	measured, _, _ = strings.Cut(measured, "</pre>")
	rows, tlsSeen := 0, 0
	for line := range strings.Lines(measured) {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "tls":
			w, _ := strconv.ParseFloat(f[1], 64)
			ms, _ := strconv.ParseFloat(f[2], 64)
			tlsSeen++
			if ms >= 2 && w < 4 {
				t.Errorf("a %.1f ms TLS handshake is %.2f px wide, want >= 4", ms, w)
			}
		case len(f) == 2 && f[0] == "row":
			rows++
			if f[1] != "drawn" {
				t.Errorf("row %d of the first waterfall is empty", rows)
			}
		}
	}
	if rows == 0 || tlsSeen == 0 {
		t.Errorf("measured %d rows and %d TLS segments: nothing to check", rows, tlsSeen)
	}
}
