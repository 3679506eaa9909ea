package otelexport_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testca"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/metrics"
	"github.com/inspectproxy/inspectproxy/otelexport"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// jaegerVersion is the one .ci/jaeger.sh builds.
const jaegerVersion = "v1.76.0"

// jaegerBinary is the Jaeger .ci/jaeger.sh builds (.ci/run runs it
// first and sets INSPECTPROXY_JAEGER, so CI never skips this).
func jaegerBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("INSPECTPROXY_JAEGER")
	if p == "" {
		home, _ := os.UserHomeDir()
		p = filepath.Join(home, ".cache", "inspectproxy-jaeger", "jaeger-"+jaegerVersion)
	}
	return testtool.Need(t, p) // build it with: bash .ci/jaeger.sh
}

// jaeger is a running Jaeger v2 with in-memory storage on ports the test
// chose.
type jaeger struct {
	otlpHTTP, otlpGRPC, query string // host:port
	out                       *bytes.Buffer
}

// jaegerConfig is a Jaeger v2 (OpenTelemetry Collector) configuration:
// OTLP in, memory storage, the query API, nothing on fixed ports.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    enable_tracing: false
    max_clock_skew_adjust: 0s
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

// runJaeger runs Jaeger's binary with a config file and env, until the
// test ends, and returns its output so far; it shows it if the test failed.
func runJaeger(t *testing.T, name, config string, env ...string) *bytes.Buffer {
	t.Helper()
	out := &bytes.Buffer{}
	cmd := exec.Command(jaegerBinary(t), "--config", config)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out)
		}
	})
	return out
}

// waitUntil polls ready every 100 ms for up to a minute.
func waitUntil(t *testing.T, what string, ready func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ready(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
	}
}

func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	j := &jaeger{otlpHTTP: testnet.FreeAddr(t), otlpGRPC: testnet.FreeAddr(t), query: testnet.FreeAddr(t)}
	file := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, jaegerConfig, j.query, testnet.FreeAddr(t), j.otlpGRPC, j.otlpHTTP), 0o600); err != nil {
		t.Fatal(err)
	}
	runJaeger(t, "jaeger", file)
	waitUntil(t, "jaeger's query API and OTLP port", func() bool {
		resp, err := http.Get("http://" + j.query + "/api/v3/services")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && listening(j.otlpHTTP)
	})
	return j
}

// The OTLP JSON that Jaeger's API v3 answers with.
type (
	otlpTraces struct {
		Result struct {
			ResourceSpans []struct {
				Resource struct {
					Attributes []otlpKV `json:"attributes"`
				} `json:"resource"`
				ScopeSpans []struct {
					Spans []*otlpSpan `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		} `json:"result"`
	}
	otlpSpan struct {
		TraceID      string     `json:"traceId"`
		SpanID       string     `json:"spanId"`
		ParentSpanID string     `json:"parentSpanId"`
		Name         string     `json:"name"`
		Kind         int        `json:"kind"` // 1 internal, 2 server, 3 client
		Start        string     `json:"startTimeUnixNano"`
		End          string     `json:"endTimeUnixNano"`
		Attributes   []otlpKV   `json:"attributes"`
		Events       []otlpSpEv `json:"events"`
		Links        []struct {
			SpanID string `json:"spanId"`
		} `json:"links"`
		Status struct {
			Code    int    `json:"code"` // 2 is error
			Message string `json:"message"`
		} `json:"status"`
		service string
	}
	otlpSpEv struct {
		Time string `json:"timeUnixNano"`
		Name string `json:"name"`
	}
	otlpKV struct {
		Key   string `json:"key"`
		Value struct {
			String *string  `json:"stringValue"`
			Int    *string  `json:"intValue"`
			Bool   *bool    `json:"boolValue"`
			Double *float64 `json:"doubleValue"`
		} `json:"value"`
	}
)

// attr renders an attribute value as text ("" when absent).
func (s *otlpSpan) attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key != key {
			continue
		}
		switch v := kv.Value; {
		case v.String != nil:
			return *v.String
		case v.Int != nil:
			return *v.Int
		case v.Bool != nil:
			return strconv.FormatBool(*v.Bool)
		case v.Double != nil:
			return strconv.FormatFloat(*v.Double, 'g', -1, 64)
		}
	}
	return ""
}

func nanos(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return n
}

// traces fetches every trace Jaeger holds for service inspectproxy and
// returns them by event id (the root's inspectproxy.event.id), with spans
// in start order.
func (j *jaeger) traces(t *testing.T, since time.Time) map[string][]*otlpSpan {
	t.Helper()
	q := url.Values{
		"query.service_name":   {"inspectproxy"},
		"query.start_time_min": {since.Add(-time.Minute).UTC().Format(time.RFC3339Nano)},
		"query.start_time_max": {time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano)},
		"query.num_traces":     {"1000"},
	}
	resp, err := http.Get("http://" + j.query + "/api/v3/traces?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jaeger: %s: %s", resp.Status, body)
	}
	var tr otlpTraces
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatalf("jaeger answer: %v", err)
	}
	byTrace := map[string][]*otlpSpan{}
	for _, rs := range tr.Result.ResourceSpans {
		service := ""
		for _, kv := range rs.Resource.Attributes {
			if kv.Key == "service.name" && kv.Value.String != nil {
				service = *kv.Value.String
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				s.service = service
				byTrace[s.TraceID] = append(byTrace[s.TraceID], s)
			}
		}
	}
	byEvent := map[string][]*otlpSpan{}
	for _, spans := range byTrace {
		slices.SortStableFunc(spans, func(a, b *otlpSpan) int {
			return strings.Compare(fmt.Sprintf("%020s", a.Start), fmt.Sprintf("%020s", b.Start))
		})
		for _, s := range spans {
			if s.ParentSpanID == "" {
				byEvent[s.attr("inspectproxy.event.id")] = spans
			}
		}
	}
	return byEvent
}

// waitTraces polls until every event's trace is in Jaeger.
func (j *jaeger) waitTraces(t *testing.T, since time.Time, evs []*event.Event) map[string][]*otlpSpan {
	t.Helper()
	var got map[string][]*otlpSpan
	waitUntil(t, fmt.Sprintf("%d traces in Jaeger", len(evs)), func() bool {
		got = j.traces(t, since)
		for _, ev := range evs {
			if _, ok := got[ev.ID]; !ok {
				return false
			}
		}
		return true
	})
	return got
}

// sink keeps the events the proxy writes.
type sink struct{ ch chan *event.Event }

func (s *sink) Write(ev *event.Event) error { s.ch <- ev; return nil }

func (s *sink) next(t *testing.T) *event.Event {
	t.Helper()
	select {
	case ev := <-s.ch:
		return ev
	case <-time.After(15 * time.Second):
		t.Fatal("no event in 15s")
		return nil
	}
}

// world is a real proxy exporting to a real Jaeger, with a TLS server and
// a plain HTTP server behind it, and clients that trust what they must.
type world struct {
	proxyURL   *url.URL
	events     *sink
	stats      *metrics.Metrics
	exporter   *otelexport.Exporter
	tlsServer  *httptest.Server
	leafSHA256 string // the server certificate's SHA-256, computed here
	leafSubj   string
	httpServer *httptest.Server
	serverCA   *testpki.CA
	mitmRoots  *tlsRoots
}

type tlsRoots struct{ pem []byte }

func startWorld(t *testing.T, j *jaeger, c config.OTLP) *world {
	t.Helper()
	w := &world{events: &sink{ch: make(chan *event.Event, 16)}, stats: metrics.New()}

	// Servers: a TLS one with a certificate from a test CA, a plain one.
	w.serverCA = testpki.NewCA(t, "inspectproxy otel test root")
	leaf := w.serverCA.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256})
	sum := sha256.Sum256(leaf.Certificate[0])
	w.leafSHA256, w.leafSubj = strings.ToUpper(hex.EncodeToString(sum[:])), leaf.Leaf.Subject.String()
	hello := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // a wait the trace must show
		io.WriteString(rw, "hello from "+r.URL.Path)
	})
	w.tlsServer = httptest.NewUnstartedServer(hello)
	w.tlsServer.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
	w.tlsServer.StartTLS()
	t.Cleanup(w.tlsServer.Close)
	w.httpServer = httptest.NewServer(hello)
	t.Cleanup(w.httpServer.Close)

	// The proxy trusts the server CA (MITM upstreams are verified) and
	// decrypts tunnels to "localhost" only.
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "server-root.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: w.serverCA.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	mitmCA, issuer := testca.New(t)
	var pemBuf bytes.Buffer
	if err := mitmCA.WritePEM(&pemBuf); err != nil {
		t.Fatal(err)
	}
	w.mitmRoots = &tlsRoots{pem: pemBuf.Bytes()}

	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS.ExtraRoots = []string{rootFile}
	cfg.MITM.Hosts = []string{"localhost"}
	cfg.Limits.ShutdownGrace = 2 * time.Second
	pol, err := ats.PolicyFor(cfg.ATS.MinTLSVersion, cfg.ATS.RequireForwardSecrecy)
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	w.exporter, err = otelexport.New(context.Background(), c, otelexport.Options{Log: log, Stats: w.stats, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(cfg, proxy.Options{Log: log, Sink: w.events, Observers: []proxy.Observer{w.exporter}, Checker: ats.Checker{Policy: pol}, MITM: issuer})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a net.Addr) { ready <- a }) }()
	select {
	case a := <-ready:
		w.proxyURL = &url.URL{Scheme: "http", Host: a.String()}
	case err := <-done:
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := w.exporter.Shutdown(sctx); err != nil {
			t.Errorf("exporter: %v", err)
		}
	})
	return w
}

// get fetches u through the proxy on a new connection, which the client
// closes afterwards, and returns the response's TLS state.
func (w *world) get(t *testing.T, u string, roots []byte) *tls.ConnectionState {
	t.Helper()
	pool := w.serverCA.Pool.Clone()
	if roots != nil {
		pool.AppendCertsFromPEM(roots)
	}
	tr := &http.Transport{Proxy: http.ProxyURL(w.proxyURL), TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "hello") {
		t.Fatalf("GET %s: %s %q", u, resp.Status, body)
	}
	return resp.TLS
}

// connectRefused asks the proxy for a tunnel to a port nothing listens on.
func (w *world) connectRefused(t *testing.T) string {
	t.Helper()
	target := testnet.FreeAddr(t) // closed again: connect is refused
	c, err := net.Dial("tcp", w.proxyURL.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	line, _ := io.ReadAll(io.LimitReader(c, 12))
	if !strings.HasPrefix(string(line), "HTTP/1.1 502") {
		t.Fatalf("CONNECT to a closed port: %q", line)
	}
	return target
}

// tolerance covers the event's microsecond rounding of each *_ms.
const tolerance = 2 * time.Microsecond

// checkSpan asserts a span's start and end (from the accept, in ms, as
// the event gives them).
func checkSpan(t *testing.T, ev *event.Event, s *otlpSpan, fromMS, toMS float64) {
	t.Helper()
	t0 := ev.Start.UnixNano()
	gotFrom, gotTo := nanos(t, s.Start)-t0, nanos(t, s.End)-t0
	wantFrom, wantTo := int64(math.Round(fromMS*1e6)), int64(math.Round(toMS*1e6))
	if d := time.Duration(gotFrom - wantFrom); d.Abs() > tolerance {
		t.Errorf("%s %q starts at %.6f ms, the event says %.6f ms", ev.ID, s.Name, float64(gotFrom)/1e6, fromMS)
	}
	if d := time.Duration(gotTo - wantTo); d.Abs() > tolerance {
		t.Errorf("%s %q ends at %.6f ms, the event says %.6f ms", ev.ID, s.Name, float64(gotTo)/1e6, toMS)
	}
}

func wantAttrs(t *testing.T, ev *event.Event, s *otlpSpan, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := s.attr(k); got != v {
			t.Errorf("%s %q: %s = %q, want %q", ev.ID, s.Name, k, got, v)
		}
	}
}

// checkAttempts: one tcp connect span per attempt of the event, in order,
// each from its start_ms for its ms; the one that connected carries the
// kernel's handshake time, connect_ms.
func checkAttempts(t *testing.T, ev *event.Event, tcp *event.TCP, kids []*otlpSpan) {
	t.Helper()
	var connects []*otlpSpan
	for _, s := range kids {
		if s.Name == "tcp connect" {
			connects = append(connects, s)
		}
	}
	if len(connects) != len(tcp.Attempts) || len(connects) == 0 {
		t.Fatalf("%d connect spans for %d attempts", len(connects), len(tcp.Attempts))
	}
	for i, a := range tcp.Attempts {
		checkSpan(t, ev, connects[i], a.StartMS, a.StartMS+a.MS)
		host, port := hostPortOf(t, a.Addr)
		want := map[string]string{"network.peer.address": host, "network.peer.port": port, "inspectproxy.tcp.attempt.outcome": a.Outcome}
		if a.Outcome == "connected" {
			want["inspectproxy.tcp.connect_ms"] = strconv.FormatFloat(*tcp.ConnectMS, 'g', -1, 64)
		}
		wantAttrs(t, ev, connects[i], want)
	}
}

// byName finds the one span of that name.
func byName(t *testing.T, spans []*otlpSpan, name string) *otlpSpan {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no span %q among %v", name, names(spans))
	return nil
}

func children(spans []*otlpSpan, parent *otlpSpan) []*otlpSpan {
	var out []*otlpSpan
	for _, s := range spans {
		if s.ParentSpanID == parent.SpanID {
			out = append(out, s)
		}
	}
	return out
}

func names(spans []*otlpSpan) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name)
	}
	return n
}

func hostPortOf(t *testing.T, hp string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// TestJaegerWaterfall sends real traffic through the real proxy (a
// passthrough TLS tunnel, plain HTTP, a decrypted tunnel, a refused
// connect), exports to a real Jaeger over each OTLP protocol, and reads
// the traces back from Jaeger's API: the spans, their order, their times
// against the event's, and the attributes, some of them against what the
// client and the server themselves saw.
func TestJaegerWaterfall(t *testing.T) {
	j := startJaeger(t)
	for _, proto := range []string{otelexport.ProtocolHTTPProtobuf, otelexport.ProtocolGRPC, otelexport.ProtocolHTTPJSON} {
		t.Run(proto, func(t *testing.T) {
			endpoint := "http://" + j.otlpHTTP
			if proto == otelexport.ProtocolGRPC {
				endpoint = "http://" + j.otlpGRPC
			}
			since := time.Now()
			w := startWorld(t, j, config.OTLP{Endpoint: endpoint, Protocol: proto, SamplingRatio: 1, QueueSize: 2048, Timeout: 10 * time.Second})
			_, tlsPort := hostPortOf(t, w.tlsServer.Listener.Addr().String())

			cs := w.get(t, "https://127.0.0.1:"+tlsPort+"/tunnel", nil)
			tunnel := w.events.next(t)
			w.get(t, w.httpServer.URL+"/plain", nil)
			plain := w.events.next(t)
			w.get(t, "https://localhost:"+tlsPort+"/mitm", w.mitmRoots.pem)
			mitm := w.events.next(t)
			refusedTarget := w.connectRefused(t)
			refused := w.events.next(t)
			evs := []*event.Event{tunnel, plain, mitm, refused}
			if tunnel.Kind != event.KindTunnel || plain.Kind != event.KindHTTP || mitm.Kind != event.KindMITM || refused.Error == "" {
				t.Fatalf("events of kinds %s %s %s, refused error %q", tunnel.Kind, plain.Kind, mitm.Kind, refused.Error)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.exporter.ForceFlush(ctx); err != nil {
				t.Fatal(err)
			}
			got := j.waitTraces(t, since, evs)

			t.Run("tunnel", func(t *testing.T) { checkTunnel(t, w, tunnel, cs, got[tunnel.ID]) })
			t.Run("plain http", func(t *testing.T) { checkPlain(t, w, plain, got[plain.ID]) })
			t.Run("mitm", func(t *testing.T) { checkMITM(t, mitm, got[mitm.ID]) })
			t.Run("refused", func(t *testing.T) { checkRefused(t, refused, refusedTarget, got[refused.ID]) })

			rec := httptest.NewRecorder()
			w.stats.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			spans := 0
			for _, ev := range evs {
				spans += len(got[ev.ID])
			}
			for _, want := range []string{
				`inspectproxy_otlp_traces_total{outcome="queued"} 4`,
				fmt.Sprintf(`inspectproxy_otlp_spans_total{outcome="exported"} %d`, spans),
				`inspectproxy_otlp_spans_total{outcome="dropped"} 0`,
			} {
				if !strings.Contains(rec.Body.String(), want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

func checkTunnel(t *testing.T, w *world, ev *event.Event, cs *tls.ConnectionState, spans []*otlpSpan) {
	root := spans[0]
	if root.ParentSpanID != "" || root.Kind != 2 || root.service != "inspectproxy" {
		t.Fatalf("root %q kind %d parent %q service %q", root.Name, root.Kind, root.ParentSpanID, root.service)
	}
	host, port := hostPortOf(t, ev.Target)
	if root.Name != "tunnel "+ev.Target {
		t.Errorf("root name %q", root.Name)
	}
	checkSpan(t, ev, root, 0, float64(ev.End.Sub(ev.Start))/1e6)
	// The client's own view of the handshake and the server's certificate.
	wantAttrs(t, ev, root, map[string]string{
		"inspectproxy.event.id":         ev.ID,
		"inspectproxy.kind":             "tunnel",
		"server.address":                host,
		"server.port":                   port,
		"client.address":                "127.0.0.1",
		"network.transport":             "tcp",
		"network.peer.address":          "127.0.0.1",
		"tls.protocol.name":             "tls",
		"tls.protocol.version":          strings.TrimPrefix(tls.VersionName(cs.Version), "TLS "),
		"tls.cipher":                    tls.CipherSuiteName(cs.CipherSuite),
		"tls.established":               "true",
		"tls.resumed":                   strconv.FormatBool(cs.DidResume),
		"tls.server.hash.sha256":        w.leafSHA256,
		"tls.server.subject":            w.leafSubj,
		"tls.client.ja3":                ev.TLS.JA3Hash,
		"inspectproxy.tls.ja4":          ev.TLS.JA4,
		"inspectproxy.tls.chain_source": ev.TLS.ChainSource,
		"inspectproxy.tls.verified":     "true",
		"inspectproxy.tcp.first_fin":    ev.TCP.FirstFIN,
		"inspectproxy.ats.compliant":    ev.ATS.Compliant,
	})
	kids := children(spans, root)
	want := []string{"tcp connect", "tls handshake"}
	if ev.TCP.ClientFINMS != nil && ev.TCP.ServerFINMS != nil {
		want = append(want, "half-close")
	}
	if !slices.Equal(names(kids), want) {
		t.Fatalf("children in start order %v, want %v", names(kids), want)
	}
	tc := ev.TCP
	checkAttempts(t, ev, tc, kids)
	tl := ev.TLS
	checkSpan(t, ev, kids[1], *tl.HandshakeDone-*tl.HandshakeMS, *tl.HandshakeDone)
	hello := map[string]float64{}
	for _, e := range kids[1].Events {
		hello[e.Name] = float64(nanos(t, e.Time)-ev.Start.UnixNano()) / 1e6
	}
	if math.Abs(hello["tls.client_hello"]-*tl.ClientHelloMS) > 0.002 || math.Abs(hello["tls.server_hello"]-*tl.ServerHelloMS) > 0.002 {
		t.Errorf("hello events at %v, the event says %v and %v", hello, *tl.ClientHelloMS, *tl.ServerHelloMS)
	}
	if len(want) == 3 {
		checkSpan(t, ev, kids[2], min(*tc.ClientFINMS, *tc.ServerFINMS), max(*tc.ClientFINMS, *tc.ServerFINMS))
		if d := float64(nanos(t, kids[2].End)-nanos(t, kids[2].Start)) / 1e6; math.Abs(d-*tc.HalfCloseMS) > 0.002 {
			t.Errorf("half-close lasts %.6f ms, half_close_ms %.6f", d, *tc.HalfCloseMS)
		}
	}
}

func checkPlain(t *testing.T, w *world, ev *event.Event, spans []*otlpSpan) {
	root := spans[0]
	kids := children(spans, root)
	if len(kids) != 2 {
		t.Fatalf("children %v", names(kids))
	}
	get, up := byName(t, kids, "GET"), byName(t, kids, "upstream "+ev.Target)
	if len(ev.Upstreams) != 1 || len(ev.HTTP) != 1 {
		t.Fatalf("event has %d upstreams, %d requests", len(ev.Upstreams), len(ev.HTTP))
	}
	h := ev.HTTP[0]
	wantAttrs(t, ev, get, map[string]string{
		"http.request.method":           "GET",
		"http.response.status_code":     "200",
		"url.full":                      w.httpServer.URL + "/plain",
		"network.protocol.version":      "1.1",
		"inspectproxy.http.upstream_id": "1",
	})
	if len(get.Links) != 1 || get.Links[0].SpanID != up.SpanID {
		t.Errorf("GET links %v, want the upstream span %s", get.Links, up.SpanID)
	}
	phases := children(spans, get)
	if !slices.Equal(names(phases), []string{"send", "wait", "receive"}) {
		t.Fatalf("phases %v", names(phases))
	}
	// The request waited for its new connection: send starts when the
	// upstream was connected.
	tc := ev.Upstreams[0].TCP
	send := max(h.StartMS+ptrOr(h.BlockedMS), tc.ConnectAt)
	checkSpan(t, ev, phases[0], send, send+h.SendMS)
	checkSpan(t, ev, phases[1], send+h.SendMS, send+h.SendMS+*h.WaitMS)
	checkSpan(t, ev, phases[2], send+h.SendMS+*h.WaitMS, send+h.SendMS+*h.WaitMS+*h.ReceiveMS)
	if *h.WaitMS < 20 {
		t.Errorf("wait %.3f ms, the server slept 20 ms", *h.WaitMS)
	}
	checkSpan(t, ev, up, *tc.DialAtMS, *tc.DialAtMS+tc.DurationMS)
	checkAttempts(t, ev, &tc, children(spans, up))
}

func checkMITM(t *testing.T, ev *event.Event, spans []*otlpSpan) {
	root := spans[0]
	kids := children(spans, root)
	if len(ev.Upstreams) != 1 || len(kids) != 2 {
		t.Fatalf("children %v, upstreams %d", names(kids), len(ev.Upstreams))
	}
	get, upSpan := byName(t, kids, "GET"), byName(t, kids, "upstream "+ev.Target)
	up := ev.Upstreams[0]
	upKids := children(spans, upSpan)
	var hs *otlpSpan
	for _, s := range upKids {
		if s.Name == "tls handshake" {
			hs = s
		}
	}
	if hs == nil || up.TLS == nil || up.TLS.HandshakeDone == nil {
		t.Fatalf("upstream children %v, upstream tls %+v", names(upKids), up.TLS)
	}
	checkSpan(t, ev, hs, *up.TLS.HandshakeDone-*up.TLS.HandshakeMS, *up.TLS.HandshakeDone)
	wantAttrs(t, ev, upSpan, map[string]string{
		"tls.protocol.version":          "1.3",
		"inspectproxy.tls.chain_source": "mitm",
		"inspectproxy.upstream.id":      "1",
	})
	wantAttrs(t, ev, get, map[string]string{"url.full": ev.HTTP[0].URL, "http.response.status_code": "200"})
}

func checkRefused(t *testing.T, ev *event.Event, target string, spans []*otlpSpan) {
	root := spans[0]
	if root.Status.Code != 2 || root.Status.Message != ev.Error || !strings.Contains(ev.Error, "refused") {
		t.Errorf("root status %d %q, event error %q", root.Status.Code, root.Status.Message, ev.Error)
	}
	if root.Name != "tunnel "+target {
		t.Errorf("root name %q", root.Name)
	}
}

func ptrOr(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// TestCollectorExample runs configs/otel-collector.yaml as it is shipped,
// with Jaeger's binary (a collector distribution), in front of a second
// Jaeger as the team's backend: a trace sent to the collector must reach
// the backend, and its spans must come out as Prometheus histograms.
func TestCollectorExample(t *testing.T) {
	backend := startJaeger(t)
	grpcAddr, httpAddr, promAddr, selfAddr := testnet.FreeAddr(t), testnet.FreeAddr(t), testnet.FreeAddr(t), testnet.FreeAddr(t)
	selfHost, selfPort := hostPortOf(t, selfAddr)
	runJaeger(t, "collector", "../configs/otel-collector.yaml",
		"COLLECTOR_OTLP_GRPC="+grpcAddr, "COLLECTOR_OTLP_HTTP="+httpAddr,
		"TRACES_BACKEND="+backend.otlpGRPC, "SPANMETRICS_LISTEN="+promAddr,
		"COLLECTOR_METRICS_HOST="+selfHost, "COLLECTOR_METRICS_PORT="+selfPort)
	waitUntil(t, "the collector's OTLP/HTTP port", func() bool { return listening(httpAddr) })

	f, err := os.Open("testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := event.NewReader(f).Next() // the passthrough tunnel to api.example.com
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	x, err := otelexport.New(context.Background(), config.OTLP{Endpoint: "http://" + httpAddr, SamplingRatio: 1, QueueSize: 100, Timeout: 10 * time.Second},
		otelexport.Options{Log: zaptest.NewLogger(t), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	x.ConnClosed(ev)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := x.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	got := backend.waitTraces(t, ev.Start, []*event.Event{ev})
	if names := names(got[ev.ID]); !slices.Contains(names, "tls handshake") || names[0] != "tunnel api.example.com:443" {
		t.Errorf("spans at the backend: %v", names)
	}

	// The span metrics are flushed every 15 s.
	waitUntil(t, "a duration histogram of span tls handshake to api.example.com", func() bool {
		resp, err := http.Get("http://" + promAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for line := range strings.Lines(string(body)) {
			if strings.HasPrefix(line, "traces_span_metrics_duration_milliseconds_count{") &&
				strings.Contains(line, `span_name="tls handshake"`) && strings.Contains(line, `server_address="api.example.com"`) {
				return true
			}
		}
		return false
	})
}
