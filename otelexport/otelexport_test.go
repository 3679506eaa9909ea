package otelexport

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/metrics"
)

func TestMain(m *testing.M) {
	// The proxy's reset watcher is one goroutine for the process, as in
	// the proxy's own tests.
	goleak.VerifyTestMain(m, testtool.IgnoreRSTWatch)
}

// tally is Stats for tests: counts by outcome.
type tally struct {
	mu     sync.Mutex
	traces map[string]int
	spans  map[string]int
}

func newTally() *tally { return &tally{traces: map[string]int{}, spans: map[string]int{}} }

func (s *tally) OTLPTrace(o string) { s.mu.Lock(); s.traces[o]++; s.mu.Unlock() }
func (s *tally) OTLPSpans(o string, n int) {
	s.mu.Lock()
	s.spans[o] += n
	s.mu.Unlock()
}

func (s *tally) get() (traces, spans map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, sp := map[string]int{}, map[string]int{}
	for k, v := range s.traces {
		t[k] = v
	}
	for k, v := range s.spans {
		sp[k] = v
	}
	return t, sp
}

func noEnv(string) string { return "" }

func newExporter(t *testing.T, c config.OTLP, st Stats) *Exporter {
	t.Helper()
	x, err := New(context.Background(), c, Options{Log: zaptest.NewLogger(t), Stats: st, Getenv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func shutdown(t *testing.T, x *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := x.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// blackhole accepts connections and never answers, like a collector
// whose host is up and whose process is stuck.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// TestFullQueueDropsWholeTracesAndCounts points the exporter at a
// blackhole with a queue for about one trace: the first trace is queued
// (and fails at the export timeout), every later one is dropped whole and
// counted, and ConnClosed never waits for the network.
func TestFullQueueDropsWholeTracesAndCounts(t *testing.T) {
	evs := readEvents(t)
	tunnel := evs[0]
	n := len(plan(tunnel))
	st := newTally()
	x := newExporter(t, config.OTLP{Endpoint: "http://" + blackhole(t), QueueSize: n, SamplingRatio: 1, Timeout: time.Second}, st)
	const conns = 50
	for range conns {
		x.ConnClosed(tunnel)
	}
	traces, spans := st.get()
	if traces[metrics.OTLPQueued] != 1 || traces[metrics.OTLPDropped] != conns-1 || spans[metrics.OTLPDropped] != (conns-1)*n {
		t.Errorf("traces %v spans %v, want 1 queued, %d dropped traces of %d spans", traces, spans, conns-1, n)
	}
	shutdown(t, x) // the queued trace meets the blackhole
	_, spans = st.get()
	if spans[metrics.OTLPFailed] != n || spans[metrics.OTLPExported] != 0 {
		t.Errorf("spans %v, want %d failed", spans, n)
	}
	if p := x.gate.pending.Load(); p != 0 {
		t.Errorf("%d spans still pending after shutdown", p)
	}
}

// TestSamplingRatioZero exports nothing and keeps no room in the queue.
func TestSamplingRatioZero(t *testing.T) {
	st := newTally()
	x := newExporter(t, config.OTLP{Endpoint: "http://" + blackhole(t), QueueSize: 10, SamplingRatio: 0}, st)
	for _, ev := range readEvents(t) {
		x.ConnClosed(ev)
	}
	x.ConnClosed(&event.Event{Kind: event.KindGap, Dropped: 3}) // not a connection: not even counted
	traces, spans := st.get()
	if traces[metrics.OTLPUnsampled] != 7 || traces[metrics.OTLPQueued] != 0 || len(spans) != 0 {
		t.Errorf("traces %v spans %v, want 7 unsampled and nothing else", traces, spans)
	}
	if p := x.gate.pending.Load(); p != 0 {
		t.Errorf("%d spans pending", p)
	}
	shutdown(t, x)
}

// receiver is a loopback HTTP server standing in for a collector's
// OTLP/HTTP port: it records what arrives and answers 200, as the
// specification says for a full success.
type receiver struct {
	mu      sync.Mutex
	headers []http.Header
	paths   []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	r.mu.Lock()
	r.headers = append(r.headers, req.Header.Clone())
	r.paths = append(r.paths, req.URL.Path)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
}

// TestHeadersAndCAFile sends over https to a server whose certificate only
// otlp.ca_file trusts, with otlp.headers, to the base URL plus /v1/traces.
func TestHeadersAndCAFile(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewTLSServer(rec)
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		caFile string
		want   string
	}{
		{"trusted by ca_file", caFile, metrics.OTLPExported},
		{"system roots only", "", metrics.OTLPFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newTally()
			x := newExporter(t, config.OTLP{
				Endpoint: srv.URL + "/otlp", CAFile: tc.caFile, Timeout: 2 * time.Second, SamplingRatio: 1, QueueSize: 100,
				Headers: map[string]string{"authorization": "Bearer s3cret", "x-scope-orgid": "lab"},
			}, st)
			ev := readEvents(t)[0]
			x.ConnClosed(ev)
			shutdown(t, x)
			_, spans := st.get()
			if spans[tc.want] != len(plan(ev)) {
				t.Fatalf("spans %v, want all %d %s", spans, len(plan(ev)), tc.want)
			}
		})
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.headers) != 1 {
		t.Fatalf("%d requests arrived, want 1 (the untrusted one must not)", len(rec.headers))
	}
	h := rec.headers[0]
	if h.Get("Authorization") != "Bearer s3cret" || h.Get("X-Scope-Orgid") != "lab" || h.Get("Content-Type") != "application/x-protobuf" {
		t.Errorf("headers %v", h)
	}
	if rec.paths[0] != "/otlp/v1/traces" {
		t.Errorf("path %q, want /otlp/v1/traces", rec.paths[0])
	}
}

// TestEnvironment: with no otlp keys set, the standard variables decide
// (the SDK reads them from the process), and a key set wins over them.
func TestEnvironment(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL+"/env")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-from=env")
	c := config.Default().OTLP
	if !Enabled(c, nil) {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT should turn export on")
	}
	st := newTally()
	x, err := New(context.Background(), c, Options{Log: zaptest.NewLogger(t), Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	x.ConnClosed(readEvents(t)[0])
	shutdown(t, x)

	c.Headers = map[string]string{"x-from": "config"}
	c.Endpoint = srv.URL + "/config"
	x, err = New(context.Background(), c, Options{Log: zaptest.NewLogger(t), Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	x.ConnClosed(readEvents(t)[0])
	shutdown(t, x)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.paths) != 2 || rec.paths[0] != "/env/v1/traces" || rec.headers[0].Get("X-From") != "env" ||
		rec.paths[1] != "/config/v1/traces" || rec.headers[1].Get("X-From") != "config" {
		t.Errorf("paths %v headers %v", rec.paths, rec.headers)
	}
}

func TestProtocol(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     string
		env     map[string]string
		want    string
		wantErr string
	}{
		{"default", "", nil, ProtocolHTTPProtobuf, ""},
		{"key", ProtocolGRPC, map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": ProtocolHTTPJSON}, ProtocolGRPC, ""},
		{"env", "", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": ProtocolGRPC}, ProtocolGRPC, ""},
		{"traces env first", "", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": ProtocolGRPC, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": ProtocolHTTPJSON}, ProtocolHTTPJSON, ""},
		{"bad env", "", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "", `OTEL_EXPORTER_OTLP_PROTOCOL="thrift"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := protocol(config.OTLP{Protocol: tc.key}, func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("protocol %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestTracesURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:4318":           "http://127.0.0.1:4318/v1/traces",
		"http://127.0.0.1:4318/":          "http://127.0.0.1:4318/v1/traces",
		"https://otlp.example.com/tenant": "https://otlp.example.com/tenant/v1/traces",
	} {
		if got := tracesURL(in); got != want {
			t.Errorf("tracesURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkConnClosed is what a connection pays at close for its trace:
// the plan, the spans, the hand-off to the batch processor (the export
// itself runs on the processor's goroutine, to a loopback receiver).
func BenchmarkConnClosed(b *testing.B) {
	srv := httptest.NewServer(&receiver{})
	defer srv.Close()
	f, err := os.Open("testdata/events.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	ev, err := event.NewReader(f).Next() // the passthrough tunnel
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		ratio float64
	}{{"sampled", 1}, {"unsampled", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			x, err := New(context.Background(), config.OTLP{Endpoint: srv.URL, SamplingRatio: tc.ratio, QueueSize: 1 << 20}, Options{Getenv: noEnv})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				x.ConnClosed(ev)
			}
			b.StopTimer()
			_ = x.Shutdown(context.Background())
		})
	}
}
