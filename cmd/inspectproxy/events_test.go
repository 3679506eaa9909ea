package main

// These tests run the real binary, as a user or logrotate would: they
// build it, drive it with real connections and signals, and read the
// events file, /metrics and /healthz it leaves.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testevents"
	"github.com/inspectproxy/inspectproxy/internal/testtmpfs"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
)

var binary string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "inspectproxy-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "inspectproxy")
		if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(testtool.IgnoreRSTWatch); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// proc is a running inspectproxy.
type proc struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	logs   *logs
	proxy  *http.Client
	admin  string // base URL, "" without --admin
	gets   int    // requests made by get
	done   chan struct{}
	err    error // Wait's, once done is closed
}

// logs collects the JSON log lines of stderr.
type logs struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   bytes.Buffer
	added chan struct{} // cap 1
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(p)
	for {
		line, err := l.raw.ReadBytes('\n')
		if err != nil {
			l.raw.Write(line) // keep the partial line
			break
		}
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			l.lines = append(l.lines, m)
		}
	}
	select {
	case l.added <- struct{}{}:
	default:
	}
	return len(p), nil
}

// find returns the first log line with msg, waiting up to a minute (a
// hang, not slowness).
func (l *logs) find(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		if m := l.lookup(msg); m != nil {
			return m
		}
		select {
		case <-l.added:
		case <-deadline:
			t.Fatalf("no log line %q in:\n%s", msg, l.all())
		}
	}
}

func (l *logs) lookup(msg string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.lines {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

func (l *logs) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, m := range l.lines {
		if m["msg"] != "connection" {
			fmt.Fprintln(&b, m)
		}
	}
	return b.String()
}

// start runs the binary with args and waits until it listens.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{logs: &logs{added: make(chan struct{}, 1)}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"--listen", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	addr := p.logs.find(t, "listening")["addr"].(string)
	pu, _ := url.Parse("http://" + addr)
	// A new connection for each request: one event each.
	p.proxy = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}, Timeout: time.Minute}
	if strings.Contains(strings.Join(args, " "), "--admin") {
		p.admin = "http://" + p.logs.find(t, "admin listening")["addr"].(string)
	}
	return p
}

// get makes one request through the proxy; it must succeed.
func (p *proc) get(t *testing.T, u string) {
	t.Helper()
	resp, err := p.proxy.Get(u)
	if err != nil {
		t.Fatalf("GET through the proxy: %v", err)
	}
	p.gets++
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET through the proxy: %s", resp.Status)
	}
}

// stop sends sig and returns the exit status.
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatal("the proxy did not exit")
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// health is GET /healthz: status and body.
func (p *proc) health(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(p.admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metrics scrapes /metrics: series name{labels} → value.
func (p *proc) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			if c := m.GetCounter(); c != nil {
				out[key] = c.GetValue()
			} else if g := m.GetGauge(); g != nil {
				out[key] = g.GetValue()
			}
		}
	}
	return out
}

// counts are the events-file series of one scrape.
type counts struct{ events, written, dropped, writeErrors, gaps, queued float64 }

func (p *proc) counts(t *testing.T) counts {
	m := p.metrics(t)
	var c counts
	for k, v := range m {
		switch {
		case strings.HasPrefix(k, "inspectproxy_events_total{"):
			c.events += v
		case strings.HasPrefix(k, "inspectproxy_events_dropped_total{"):
			c.dropped += v
		}
	}
	c.written = m["inspectproxy_events_written_total"]
	c.writeErrors = m[`inspectproxy_events_dropped_total{reason="write_error"}`]
	c.gaps = m["inspectproxy_events_gap_records_total"]
	c.queued = m["inspectproxy_events_queued"]
	return c
}

// settled waits until every connection get made has closed and its event
// is written or dropped, and returns the counts then.
func (p *proc) settled(t *testing.T) counts {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c := p.counts(t)
		if c.events == float64(p.gets) && c.queued == 0 && c.written+c.dropped == c.events {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("events never settled: %+v", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readEvents reads the events file at path.
func readEvents(t *testing.T, path string) testevents.Contents { return testevents.ReadFile(t, path) }

func upstream(t *testing.T) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(up.Close)
	return up.URL
}

// fill writes to a new file in dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("filler-%d", time.Now().UnixNano()))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// TestDiskFull is the bug report's case: the events file on a 1 MiB tmpfs
// that fills up. The proxy keeps proxying; /healthz, the metrics and the
// file agree on what was written and lost; writing resumes when space is
// freed; and a shutdown on a full disk still exits 0.
func TestDiskFull(t *testing.T) {
	dir := testtmpfs.Mount(t, 1<<20)
	events := filepath.Join(dir, "events.jsonl")
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 700<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	up := upstream(t)
	p := start(t, "--events", events, "--admin", "127.0.0.1:0")
	if code, body := p.health(t); code != 200 || body != "ok\n" {
		t.Fatalf("healthz before: %d %q", code, body)
	}

	// Until the disk is full, and 50 requests more: every one is served.
	for i, extra := 0, -1; extra != 0; i++ {
		if i == 5000 {
			t.Fatal("5000 requests and no write error")
		}
		p.get(t, up)
		if extra < 0 && i%20 == 0 && p.counts(t).writeErrors > 0 {
			extra = 50
		}
		if extra > 0 {
			extra--
		}
	}
	c := p.settled(t)
	code, body := p.health(t)
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "events: ") || !strings.Contains(body, " dropped since ") || !strings.Contains(body, "last error: write "+events+": no space left on device") {
		t.Errorf("healthz on a full disk: %d %q", code, body)
	}
	t.Logf("full disk: /healthz %d %s", code, body)
	f := readEvents(t, events)
	if len(f.Torn) != 0 || !f.EndsWhole || float64(len(f.IDs)) != c.written || float64(len(f.Gaps)) != c.gaps {
		t.Errorf("file (%d events, %d gap records, %d torn lines) and metrics %+v disagree", len(f.IDs), len(f.Gaps), len(f.Torn), c)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		p.get(t, up)
	}
	c = p.settled(t)
	if code, body := p.health(t); code != 200 || body != "ok\n" {
		t.Errorf("healthz after space came back: %d %q", code, body)
	}
	f = readEvents(t, events)
	if len(f.Torn) != 0 || float64(len(f.IDs)) != c.written || float64(len(f.Gaps)) != c.gaps || float64(f.Stated()) != c.dropped || c.dropped != c.writeErrors {
		t.Errorf("after recovery: file has %d events, %d gap records stating %d drops, %d torn lines; metrics %+v", len(f.IDs), len(f.Gaps), f.Stated(), len(f.Torn), c)
	}
	t.Logf("recovered: metrics %+v; file: %d events, %d gap records stating %d", c, len(f.IDs), len(f.Gaps), f.Stated())

	// Full again, and stopped while full.
	fill(t, dir)
	for range 30 {
		p.get(t, up)
	}
	c = p.settled(t)
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit status %d after write errors, want 0\n%s", code, p.logs.all())
	}
	closed := p.logs.lookup("events file closed with losses")
	if closed == nil {
		closed = p.logs.find(t, "events file closed")
	}
	f = readEvents(t, events)
	num := func(k string) float64 { v, _ := closed[k].(float64); return v }
	var dropped float64
	for k, v := range closed {
		if n, ok := v.(float64); ok && strings.HasPrefix(k, "dropped_") {
			dropped += n
		}
	}
	unstated := dropped - float64(f.Stated())
	if len(f.Torn) != 0 || float64(len(f.IDs)) != num("written") || float64(len(f.Gaps)) != num("gap_records") || num("written")+dropped != c.events {
		t.Errorf("at exit: file has %d events, %d gap records; the log says %v; %v connections", len(f.IDs), len(f.Gaps), closed, c.events)
	}
	if unstated > 0 && !strings.Contains(fmt.Sprint(closed["error"]), fmt.Sprintf("%d events dropped and not stated", int(unstated))) {
		t.Errorf("%v drops not in the file, and the log does not say so: %v", unstated, closed)
	}
}

// TestKill9UnderLoad: kill -9 while connections close leaves at most one
// torn line, the last; a proxy restarted on the file starts its first
// event on a new line.
func TestKill9UnderLoad(t *testing.T) {
	events := filepath.Join(t.TempDir(), "events.jsonl")
	up := upstream(t)
	p := start(t, "--events", events)
	var made atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if resp, err := p.proxy.Get(up); err == nil {
					resp.Body.Close()
					made.Add(1)
				}
			}
		})
	}
	for made.Load() < 300 {
		time.Sleep(5 * time.Millisecond)
	}
	_ = p.stop(t, syscall.SIGKILL)
	close(stop)
	wg.Wait()
	f := readEvents(t, events)
	if len(f.Torn) > 1 || (len(f.Torn) == 1 && f.EndsWhole) || len(f.IDs) == 0 {
		t.Fatalf("after kill -9: %d events, %d torn lines (the last line whole: %v)", len(f.IDs), len(f.Torn), f.EndsWhole)
	}
	t.Logf("kill -9 after %d requests: %d events in the file, torn last line: %v", made.Load(), len(f.IDs), !f.EndsWhole)
	if f.EndsWhole {
		// The kill fell between two writes, as it almost always does; a
		// crash of the machine can still cut a write, so cut one here.
		fd, err := os.OpenFile(events, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fd.WriteString(`{"id":"torn","start":"2026-01-02T03:04:05Z","kind":"tun`)
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	before := len(f.IDs)

	p = start(t, "--events", events)
	p.logs.find(t, "events file ends in a torn line (the proxy was stopped mid-write?); ending it with a newline, readers skip it")
	for range 3 {
		p.get(t, up)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	f = readEvents(t, events)
	if len(f.Torn) != 1 || len(f.IDs) != before+3 || !f.EndsWhole {
		t.Errorf("after the restart: %d events (want %d), %d torn lines (want 1), ends whole %v", len(f.IDs), before+3, len(f.Torn), f.EndsWhole)
	}
}

// TestLogrotate runs logrotate itself with the README's configuration
// (create mode, postrotate SIGHUP): the events before the rotation are in
// events.jsonl.1, those after in the file logrotate created.
func TestLogrotate(t *testing.T) {
	logrotate, err := exec.LookPath("logrotate")
	if err != nil { // root's PATH has sbin, others' may not
		logrotate, err = exec.LookPath("/usr/sbin/logrotate")
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("logrotate is missing: .ci/run installs it")
		}
		t.Skip("logrotate is not installed (apt-get install logrotate)")
	}
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	up := upstream(t)
	p := start(t, "--events", events)
	for range 5 {
		p.get(t, up)
	}
	for deadline := time.Now().Add(time.Minute); len(readEvents(t, events).IDs) < 5; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("5 events never written")
		}
	}
	conf := filepath.Join(dir, "logrotate.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `%s {
    daily
    rotate 14
    compress
    delaycompress
    missingok
    notifempty
    create 0640
    postrotate
        kill -HUP %d
    endscript
}
`, events, p.cmd.Process.Pid), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(logrotate, "--force", "--state", filepath.Join(dir, "state"), conf).CombinedOutput(); err != nil {
		t.Fatalf("logrotate: %v\n%s", err, out)
	}
	p.logs.find(t, "events file reopened")
	for range 7 {
		p.get(t, up)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if old, cur := readEvents(t, events+".1"), readEvents(t, events); len(old.IDs) != 5 || len(cur.IDs) != 7 {
		t.Errorf("rotated file has %d events (want 5), new file %d (want 7)", len(old.IDs), len(cur.IDs))
	}
	if st, err := os.Stat(events); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("the file logrotate created: %v %v", st.Mode(), err)
	}
}

// TestEventsToStdout: "-" writes events to stdout.
func TestEventsToStdout(t *testing.T) {
	up := upstream(t)
	p := start(t, "--events", "-")
	p.get(t, up)
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	var e event.Event
	if err := json.Unmarshal(p.stdout.Bytes(), &e); err != nil || e.Kind != event.KindHTTP {
		t.Errorf("stdout %q: %v", p.stdout.String(), err)
	}
}
