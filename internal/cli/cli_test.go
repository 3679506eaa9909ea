package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/inspectproxy/inspectproxy/event"
)

// serveOneRequest runs `serve` as a user would, with args, proxies one
// GET, cancels (SIGINT in real life), and returns the event the events
// file holds and what serve logged.
func serveOneRequest(t *testing.T, args ...string) (*event.Event, string) {
	t.Helper()
	events := filepath.Join(t.TempDir(), "events.jsonl")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()

	ready := make(chan net.Addr, 1)
	var stderr bytes.Buffer
	cmd := newServe(&stderr, func(a net.Addr) { ready <- a })
	cmd.SetArgs(append([]string{"--listen", "127.0.0.1:0", "--events", events}, args...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var addr net.Addr
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("serve exited: %v\n%s", err, stderr.String())
	}
	pu, _ := url.Parse("http://" + addr.String())
	tr := &http.Transport{Proxy: http.ProxyURL(pu)}
	resp, err := (&http.Client{Transport: tr}).Get(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	f, err := os.Open(events)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ev, err := event.NewReader(f).Next()
	if err != nil {
		t.Fatalf("events file: %v", err)
	}
	return ev, stderr.String()
}

// TestServeWritesEventsAndStops: one request, one event, one log line.
func TestServeWritesEventsAndStops(t *testing.T) {
	ev, stderr := serveOneRequest(t, "--log-format", "json", "--ats-plist", "../../ats/testdata/Info.plist")
	if ev.Kind != event.KindHTTP || len(ev.HTTP) != 1 || ev.HTTP[0].Status != 200 {
		t.Errorf("event %+v", ev)
	}
	// Plain HTTP breaks ATS; the app's plist (NSAllowsLocalNetworking)
	// allows it for 127.0.0.1.
	if a := ev.ATS; a == nil || a.Compliant != "no" || a.App == nil || !a.App.Allowed || !strings.Contains(a.App.Key, "NSAllowsLocalNetworking") {
		t.Errorf("ats verdict %+v", a)
	}
	if !strings.Contains(stderr, `"msg":"connection"`) {
		t.Errorf("no JSON log line per connection:\n%s", stderr)
	}
}

func TestServeRefusesOpenProxy(t *testing.T) {
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"--listen", "0.0.0.0:0", "--events", filepath.Join(t.TempDir(), "e")}, io.Discard, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "open proxy") || !strings.Contains(stderr.String(), "allow_clients") {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
}

func TestServeRefusesOpenSOCKS(t *testing.T) {
	for _, args := range [][]string{
		{"--socks", "0.0.0.0:0"},
		{"--socks", "localhost:0"}, // a name is not trusted to be loopback
	} {
		var stderr bytes.Buffer
		code := Main(context.Background(), append(args, "--allow-local-destinations", "--events", filepath.Join(t.TempDir(), "e")), io.Discard, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), `socks.listen "`+args[1]+`" is not a loopback address`) {
			t.Errorf("%v: code %d, stderr %q", args, code, stderr.String())
		}
	}
}

// TestPortInUseCreatesNoEventsFile: the listeners are bound before the
// events file is opened, so a failed start leaves nothing behind.
func TestPortInUseCreatesNoEventsFile(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, args := range [][]string{
		{"--listen", busy.Addr().String()},
		{"--listen", "127.0.0.1:0", "--admin", busy.Addr().String()},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			events := filepath.Join(t.TempDir(), "events.jsonl")
			var stderr bytes.Buffer
			code := Main(context.Background(), append(args, "--events", events), io.Discard, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), "address already in use") {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if _, err := os.Stat(events); !os.IsNotExist(err) {
				t.Errorf("events file after a failed start: %v", err)
			}
		})
	}
}

func TestCAInitExport(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"ca", "init", "--data-dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("ca init: %s", errb.String())
	}
	st, err := os.Stat(filepath.Join(dir, "ca-key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode(), err)
	}
	if code := Main(context.Background(), []string{"ca", "export", "--data-dir", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "BEGIN CERTIFICATE") {
		t.Fatalf("ca export: %d %s", code, errb.String())
	}
	if strings.Contains(out.String()+errb.String(), "PRIVATE KEY") {
		t.Fatal("the key was printed")
	}
	if code := Main(context.Background(), []string{"ca", "init", "--data-dir", dir}, &out, &errb); code == 0 {
		t.Fatal("init over an existing CA should fail without --force")
	}
}

func TestReportCommands(t *testing.T) {
	const events = "../../report/testdata/events.jsonl"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"report", "-q", events}, "Latency report"},
		{[]string{"report", "-q", "--format", "har", events}, `"version": "1.2"`},
		{[]string{"report", "-q", "--format", "csv", events}, "host,"},
		{[]string{"ats", "report", events}, "ATS report"},
		{[]string{"ats", "report", "--json", events}, `"domains"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main(context.Background(), tc.args, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output lacks %q:\n%.400s", tc.want, out.String())
			}
		})
	}
}

// TestReportProgress: both readers show progress on stderr for a big input
// (32 MB and more), and -q silences it; stdout holds the report only.
func TestReportProgress(t *testing.T) {
	src, err := os.ReadFile("../../report/testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(t.TempDir(), "big.jsonl")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 33<<20; n += len(src) {
		if _, err := f.Write(src); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"report"}, {"ats", "report"}} {
		for _, quiet := range []bool{false, true} {
			args := append(slices.Clone(cmd), big)
			if quiet {
				args = append(args, "-q")
			}
			var out, errb bytes.Buffer
			if code := Main(context.Background(), args, &out, &errb); code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, errb.String())
			}
			shown := strings.Contains(errb.String(), "\rreading events: 100% of 3")
			if shown == quiet || strings.Contains(out.String(), "reading events") {
				t.Errorf("%v: progress on stderr %v, want %v; stderr %q", args, shown, !quiet, errb.String()[max(0, errb.Len()-120):])
			}
		}
	}
}

// TestServeOTLP runs `serve --otlp URL --admin ...`: the request becomes a
// trace, flushed when the proxy stops (before the batch processor's 5 s),
// posted as OTLP/HTTP protobuf to URL/v1/traces with the event's id.
func TestServeOTLP(t *testing.T) {
	var (
		mu   sync.Mutex
		got  []*coltracepb.ExportTraceServiceRequest
		path string
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &coltracepb.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(body, req); err != nil {
			t.Errorf("not an OTLP export request: %v", err)
		}
		mu.Lock()
		got, path = append(got, req), r.URL.Path
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	ev, stderr := serveOneRequest(t, "--otlp", collector.URL, "--admin", "127.0.0.1:0")
	mu.Lock()
	defer mu.Unlock()
	if path != "/v1/traces" {
		t.Errorf("posted to %q", path)
	}
	var ids []string
	for _, req := range got {
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					for _, kv := range s.Attributes {
						if kv.Key == "inspectproxy.event.id" {
							ids = append(ids, kv.Value.GetStringValue())
						}
					}
				}
			}
		}
	}
	if len(ids) != 1 || ids[0] != ev.ID {
		t.Errorf("traces for events %v, want [%s]\n%s", ids, ev.ID, stderr)
	}
}
