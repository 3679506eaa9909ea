package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/eventlog"
	"github.com/inspectproxy/inspectproxy/internal/netns"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ms(v float64) *float64 { return &v }

// serve runs m's admin server on loopback until the test ends, and returns
// its base URL and a client for it.
func serve(t *testing.T, m *Metrics) (string, *http.Client) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln, zaptest.NewLogger(t)) }()
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), &http.Client{Transport: tr}
}

// scrape GETs /metrics and flattens it to series → value. Histograms give
// name_count, name_sum and name_bucket{...,le="..."}.
func scrape(t *testing.T, base string, c *http.Client) map[string]float64 {
	t.Helper()
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	series := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(suffix string, extra ...string) string {
				return name + suffix + "{" + strings.Join(append(slices.Clone(labels), extra...), ",") + "}"
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				series[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				series[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				series[key("_count")] = float64(h.GetSampleCount())
				series[key("_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					series[key("_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return series
}

func TestConnClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opened []string
		events []*event.Event
		want   map[string]float64
	}{
		{
			name:   "tunnel",
			opened: []string{event.KindTunnel},
			events: []*event.Event{{
				Kind: event.KindTunnel,
				TCP:  &event.TCP{DNSMS: ms(2), ConnectMS: ms(10), RST: event.SideServer},
				TLS:  &event.TLS{HandshakeMS: ms(40), AppDataUpMS: ms(50), AppDataDownMS: ms(80)},
				ATS: &event.ATS{Compliant: "no", Violations: []event.Violation{
					{Rule: "min_tls_version", Detail: "TLS 1.1"},
					{Rule: "forward_secrecy", Detail: "TLS_RSA_WITH_AES_128_CBC_SHA"},
				}},
			}},
			want: map[string]float64{
				`inspectproxy_open_connections{kind="tunnel"}`:                      0,
				`inspectproxy_events_total{kind="tunnel"}`:                          1,
				`inspectproxy_errors_total{kind="tunnel"}`:                          0,
				`inspectproxy_dns_seconds_count{kind="tunnel"}`:                     1,
				`inspectproxy_dns_seconds_sum{kind="tunnel"}`:                       0.002,
				`inspectproxy_tcp_connect_seconds_count{kind="tunnel"}`:             1,
				`inspectproxy_tcp_connect_seconds_sum{kind="tunnel"}`:               0.010,
				`inspectproxy_tcp_connect_seconds_bucket{kind="tunnel",le="0.008"}`: 0,
				`inspectproxy_tcp_connect_seconds_bucket{kind="tunnel",le="0.016"}`: 1,
				`inspectproxy_tls_handshake_seconds_sum{kind="tunnel"}`:             0.040,
				`inspectproxy_ttfb_seconds_count{kind="tunnel"}`:                    1,
				`inspectproxy_ttfb_seconds_sum{kind="tunnel"}`:                      0.030,
				`inspectproxy_rst_total{side="server"}`:                             1,
				`inspectproxy_rst_total{side="client"}`:                             0,
				`inspectproxy_ats_violations_total{rule="min_tls_version"}`:         1,
				`inspectproxy_ats_violations_total{rule="forward_secrecy"}`:         1,
			},
		},
		{
			name:   "http with two upstreams",
			opened: []string{event.KindHTTP},
			events: []*event.Event{{
				Kind: event.KindHTTP,
				// TCP repeats Upstreams[0] and must not count twice.
				TCP: &event.TCP{DNSMS: ms(3), ConnectMS: ms(5)},
				Upstreams: []event.Upstream{
					{ID: 1, TCP: event.TCP{DNSMS: ms(3), ConnectMS: ms(5)}},
					{ID: 2, TCP: event.TCP{ConnectMS: ms(7), RST: event.SideClient}}, // IP literal: no DNS
				},
				HTTP: []event.HTTP{
					{UpstreamID: 1, WaitMS: ms(20)},
					{UpstreamID: 2, WaitMS: ms(30)},
					{UpstreamID: 2, Error: "upstream closed"}, // no response: no wait
				},
				Error: "upstream closed before response",
			}},
			want: map[string]float64{
				`inspectproxy_events_total{kind="http"}`:                1,
				`inspectproxy_errors_total{kind="http"}`:                1,
				`inspectproxy_dns_seconds_count{kind="http"}`:           1,
				`inspectproxy_tcp_connect_seconds_count{kind="http"}`:   2,
				`inspectproxy_tcp_connect_seconds_sum{kind="http"}`:     0.012,
				`inspectproxy_tls_handshake_seconds_count{kind="http"}`: 0,
				`inspectproxy_ttfb_seconds_count{kind="http"}`:          2,
				`inspectproxy_ttfb_seconds_sum{kind="http"}`:            0.050,
				`inspectproxy_rst_total{side="client"}`:                 1,
			},
		},
		{
			name:   "failed dial and server-first tunnel",
			opened: []string{event.KindTunnel, event.KindTunnel, event.KindMITM},
			events: []*event.Event{
				{Kind: event.KindTunnel, Error: "dial tcp 192.0.2.1:443: connection refused"},
				{
					Kind: event.KindTunnel,
					TCP:  &event.TCP{ConnectMS: ms(1)},
					// Down before up: no first byte to time.
					TLS: &event.TLS{AppDataUpMS: ms(90), AppDataDownMS: ms(60)},
				},
			},
			want: map[string]float64{
				`inspectproxy_open_connections{kind="tunnel"}`:            0,
				`inspectproxy_open_connections{kind="mitm"}`:              1,
				`inspectproxy_events_total{kind="tunnel"}`:                2,
				`inspectproxy_errors_total{kind="tunnel"}`:                1,
				`inspectproxy_tcp_connect_seconds_count{kind="tunnel"}`:   1,
				`inspectproxy_tls_handshake_seconds_count{kind="tunnel"}`: 0,
				`inspectproxy_ttfb_seconds_count{kind="tunnel"}`:          0,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New()
			for _, k := range tc.opened {
				m.ConnOpened(k)
			}
			for _, ev := range tc.events {
				m.ConnClosed(ev)
			}
			base, c := serve(t, m)
			got := scrape(t, base, c)
			for series, want := range tc.want {
				v, ok := got[series]
				if !ok {
					t.Errorf("%s missing", series)
				} else if math.Abs(v-want) > 1e-9 {
					t.Errorf("%s = %g, want %g", series, v, want)
				}
			}
			if _, ok := got["go_goroutines{}"]; !ok {
				t.Error("Go runtime collector missing")
			}
		})
	}
}

// TestOTLPCounters: every outcome is exported from zero, and counts add up.
func TestOTLPCounters(t *testing.T) {
	m := New()
	base, c := serve(t, m)
	zero := scrape(t, base, c)
	for _, s := range []string{
		`inspectproxy_otlp_traces_total{outcome="queued"}`, `inspectproxy_otlp_traces_total{outcome="dropped"}`,
		`inspectproxy_otlp_traces_total{outcome="unsampled"}`, `inspectproxy_otlp_spans_total{outcome="exported"}`,
		`inspectproxy_otlp_spans_total{outcome="failed"}`, `inspectproxy_otlp_spans_total{outcome="dropped"}`,
	} {
		if v, ok := zero[s]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0 before any export", s, v, ok)
		}
	}
	m.OTLPTrace(OTLPQueued)
	m.OTLPTrace(OTLPDropped)
	m.OTLPSpans(OTLPDropped, 5)
	m.OTLPSpans(OTLPExported, 7)
	m.OTLPSpans(OTLPExported, 3)
	got := scrape(t, base, c)
	for s, want := range map[string]float64{
		`inspectproxy_otlp_traces_total{outcome="queued"}`:  1,
		`inspectproxy_otlp_traces_total{outcome="dropped"}`: 1,
		`inspectproxy_otlp_spans_total{outcome="dropped"}`:  5,
		`inspectproxy_otlp_spans_total{outcome="exported"}`: 10,
		`inspectproxy_otlp_spans_total{outcome="failed"}`:   0,
	} {
		if got[s] != want {
			t.Errorf("%s = %v, want %v", s, got[s], want)
		}
	}
}

func TestHandler(t *testing.T) {
	base, c := serve(t, New())
	for _, tc := range []struct {
		method, path string
		status       int
		body         string // checked when set
	}{
		{"GET", "/healthz", http.StatusOK, "ok\n"},
		{"GET", "/metrics", http.StatusOK, ""},
		{"POST", "/metrics", http.StatusMethodNotAllowed, ""},
		{"GET", "/", http.StatusNotFound, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, base+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.body != "" && string(body) != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
		})
	}
}

func TestListen(t *testing.T) {
	for _, tc := range []struct {
		addr        string
		allowRemote bool
		refused     bool
	}{
		{addr: "127.0.0.1:0"},
		{addr: "localhost:0"},
		{addr: "0.0.0.0:0", refused: true},
		{addr: ":0", refused: true},
		{addr: "[::]:0", refused: true},
		{addr: "192.0.2.1:0", refused: true},
		{addr: "example.com:0", refused: true},
		{addr: ":0", allowRemote: true},
	} {
		t.Run(fmt.Sprintf("%s remote=%v", tc.addr, tc.allowRemote), func(t *testing.T) {
			ln, err := Listen(tc.addr, tc.allowRemote)
			if tc.refused {
				if !errors.Is(err, ErrNotLoopback) {
					t.Fatalf("Listen = %v, want ErrNotLoopback", err)
				}
				if !strings.Contains(err.Error(), "no authentication") {
					t.Errorf("error %q does not say why", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ln.Close()
		})
	}
	if _, err := Listen("no-port", false); err == nil || errors.Is(err, ErrNotLoopback) {
		t.Errorf("Listen without a port = %v", err)
	}
}

func TestServeShutdown(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New().Serve(ctx, ln, zaptest.NewLogger(t)) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	resp, err := c.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	tr.CloseIdleConnections()
	if _, err := c.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}

	// A listener that fails makes Serve return its error.
	ln, err = Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := New().Serve(context.Background(), ln, zaptest.NewLogger(t)); err == nil {
		t.Error("Serve on a closed listener = nil")
	}
}

// TestListenChecksTheBoundAddress reproduces issue 8's finding: with
// localhost pointing at a non-loopback address in /etc/hosts (a private
// mount namespace here, with the address of a veth pair), "localhost:0"
// must be refused by the address it bound, not trusted by its name.
func TestListenChecksTheBoundAddress(t *testing.T) {
	if netns.InHostsChild() {
		ln, err := Listen("localhost:0", false)
		if err == nil {
			fmt.Printf("ADMITTED %s\n", ln.Addr())
			os.Exit(1)
		}
		fmt.Printf("REFUSED %v\n", err)
		os.Exit(0)
	}
	pair := netns.New(t)
	out, err := netns.RunWithHosts(t, pair.Host4.String()+" localhost\n", "TestListenChecksTheBoundAddress")
	if err != nil || !strings.Contains(string(out), "REFUSED") || !strings.Contains(string(out), "bound "+pair.Host4.String()) {
		t.Fatalf("%v: %s", err, out)
	}
}

// TestWatchEvents: the events sink's counters are series, and /healthz is
// 503 with the sink's reason until an event is written again.
func TestWatchEvents(t *testing.T) {
	c := config.Default().Events
	c.Path = filepath.Join(t.TempDir(), "events.jsonl")
	sink, err := eventlog.Open(c, 1<<20, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sink.Close(context.Background()) }()
	m := New()
	m.WatchEvents(sink)
	base, client := serve(t, m)
	healthz := func() (int, string) {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	nan := math.NaN()
	_ = sink.Write(&event.Event{ID: "a", Kind: event.KindTunnel, TCP: &event.TCP{DNSMS: &nan}})
	if code, body := healthz(); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "events: 1 dropped since ") || !strings.Contains(body, "(encode_error 1), last error: eventlog: encode event a") {
		t.Errorf("healthz = %d %q", code, body)
	}
	got := scrape(t, base, client)
	for series, want := range map[string]float64{
		`inspectproxy_events_dropped_total{reason="encode_error"}`: 1,
		`inspectproxy_events_dropped_total{reason="queue_full"}`:   0,
		`inspectproxy_events_dropped_total{reason="write_error"}`:  0,
		`inspectproxy_events_dropped_total{reason="too_large"}`:    0,
		`inspectproxy_events_dropped_total{reason="shutdown"}`:     0,
		`inspectproxy_events_written_total{}`:                      0,
		`inspectproxy_events_gap_records_total{}`:                  0,
		`inspectproxy_events_torn_lines_total{}`:                   0,
		`inspectproxy_events_queued{}`:                             0,
		`inspectproxy_events_queued_bytes{}`:                       0,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %g (present %v), want %g", series, v, ok, want)
		}
	}

	if err := sink.Write(&event.Event{ID: "b", Kind: event.KindTunnel}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); sink.Stats().Written == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("event never written")
		}
	}
	if code, body := healthz(); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthz after a write = %d %q", code, body)
	}
	got = scrape(t, base, client)
	if got[`inspectproxy_events_written_total{}`] != 1 || got[`inspectproxy_events_gap_records_total{}`] != 1 || got[`inspectproxy_events_dropped_total{reason="encode_error"}`] != 1 {
		t.Errorf("after the write: %v", got)
	}
}
