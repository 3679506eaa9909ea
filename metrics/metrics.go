// Package metrics exports inspectproxy's counters and latency histograms
// for Prometheus on an optional admin listener, with a health check.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/eventlog"
)

// ErrNotLoopback is returned by Listen for an address other hosts can
// reach when remote access was not allowed.
var ErrNotLoopback = errors.New("metrics: admin address is not loopback")

// latencyBuckets span 0.5 ms to about 33 s, doubling: loopback connects
// land in the first buckets, slow handshakes and servers in the last.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 17)

// Metrics holds the proxy's series on a registry of its own, so tests and
// embedders never share the global one. It is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	open          *prometheus.GaugeVec
	events        *prometheus.CounterVec
	errors        *prometheus.CounterVec
	atsViolations *prometheus.CounterVec
	rsts          *prometheus.CounterVec
	dns           *prometheus.HistogramVec
	connect       *prometheus.HistogramVec
	handshake     *prometheus.HistogramVec
	ttfb          *prometheus.HistogramVec
	otlpTraces    *prometheus.CounterVec
	otlpSpans     *prometheus.CounterVec

	// health, when set, is the events sink's Health, which /healthz reports.
	health func() error
}

// What became of a connection's trace, or of spans, handed to the OTLP
// exporter (label outcome).
const (
	OTLPQueued    = "queued"    // trace: taken into the export queue
	OTLPUnsampled = "unsampled" // trace: left out by otlp.sampling_ratio
	OTLPDropped   = "dropped"   // trace or span: the queue was full
	OTLPExported  = "exported"  // span: the receiver accepted it
	OTLPFailed    = "failed"    // span: the export failed, retries included
)

// New returns Metrics with every series registered, plus the Go runtime
// and process collectors.
func New() *Metrics {
	histogram := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "inspectproxy",
			Name:      name,
			Help:      help,
			Buckets:   latencyBuckets,
		}, []string{"kind"})
	}
	counter := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "inspectproxy",
			Name:      name,
			Help:      help,
		}, []string{label})
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "inspectproxy",
			Name:      "open_connections",
			Help:      "Client connections open now, by kind.",
		}, []string{"kind"}),
		events:        counter("events_total", "Client connections closed, by kind; each event is then written or counted in events_dropped_total.", "kind"),
		errors:        counter("errors_total", "Client connections that ended with an error, by kind.", "kind"),
		atsViolations: counter("ats_violations_total", "App Transport Security rules broken, by rule.", "rule"),
		rsts:          counter("rst_total", "Connections reset, by the side that sent the RST.", "side"),
		dns:           histogram("dns_seconds", "DNS lookup time of upstream connections."),
		connect:       histogram("tcp_connect_seconds", "TCP three-way handshake time of upstream connections."),
		handshake:     histogram("tls_handshake_seconds", "TLS handshake time, ClientHello to done."),
		ttfb:          histogram("ttfb_seconds", "Time to first byte: HTTP wait, or in tunnels first data down after first data up."),
		otlpTraces:    counter("otlp_traces_total", "Client connections handed to the OTLP exporter, by outcome: queued, dropped (queue full), unsampled.", "outcome"),
		otlpSpans:     counter("otlp_spans_total", "Spans of the OTLP exporter, by outcome: exported, failed (export error), dropped (queue full).", "outcome"),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.open, m.events, m.errors, m.atsViolations, m.rsts,
		m.dns, m.connect, m.handshake, m.ttfb, m.otlpTraces, m.otlpSpans,
	)
	// Known label values start at zero, so rate() and alerts work before
	// the first connection of a kind.
	for _, k := range []string{event.KindTunnel, event.KindMITM, event.KindHTTP} {
		m.open.WithLabelValues(k)
		m.events.WithLabelValues(k)
		m.errors.WithLabelValues(k)
		for _, h := range []*prometheus.HistogramVec{m.dns, m.connect, m.handshake, m.ttfb} {
			h.WithLabelValues(k)
		}
	}
	for _, s := range []string{event.SideClient, event.SideServer, event.SideProxy} {
		m.rsts.WithLabelValues(s)
	}
	for _, o := range []string{OTLPQueued, OTLPDropped, OTLPUnsampled} {
		m.otlpTraces.WithLabelValues(o)
	}
	for _, o := range []string{OTLPExported, OTLPFailed, OTLPDropped} {
		m.otlpSpans.WithLabelValues(o)
	}
	return m
}

// OTLPTrace counts one connection's trace by outcome.
func (m *Metrics) OTLPTrace(outcome string) { m.otlpTraces.WithLabelValues(outcome).Inc() }

// OTLPSpans counts n spans by outcome.
func (m *Metrics) OTLPSpans(outcome string, n int) {
	m.otlpSpans.WithLabelValues(outcome).Add(float64(n))
}

// ConnOpened counts a client connection of kind as open. The proxy calls
// ConnClosed later with an event of the same kind.
func (m *Metrics) ConnOpened(kind string) {
	m.open.WithLabelValues(kind).Inc()
}

// ConnClosed records a finished connection: it closes what ConnOpened
// opened and observes the event's timings, errors and ATS violations.
func (m *Metrics) ConnClosed(ev *event.Event) {
	kind := ev.Kind
	m.open.WithLabelValues(kind).Dec()
	m.events.WithLabelValues(kind).Inc()
	if ev.Error != "" {
		m.errors.WithLabelValues(kind).Inc()
	}
	if ev.ATS != nil {
		for _, v := range ev.ATS.Violations {
			m.atsViolations.WithLabelValues(v.Rule).Inc()
		}
	}

	// Upstreams lists every upstream connection, ev.TCP included; a
	// tunnel has only ev.TCP.
	tcps := make([]*event.TCP, 0, 1)
	for i := range ev.Upstreams {
		tcps = append(tcps, &ev.Upstreams[i].TCP)
	}
	if len(tcps) == 0 && ev.TCP != nil {
		tcps = append(tcps, ev.TCP)
	}
	for _, t := range tcps {
		observeMS(m.dns.WithLabelValues(kind), t.DNSMS)
		observeMS(m.connect.WithLabelValues(kind), t.ConnectMS)
		if t.RST != "" {
			m.rsts.WithLabelValues(t.RST).Inc()
		}
	}

	if ev.TLS != nil {
		observeMS(m.handshake.WithLabelValues(kind), ev.TLS.HandshakeMS)
	}
	ttfb := m.ttfb.WithLabelValues(kind)
	for _, h := range ev.HTTP {
		observeMS(ttfb, h.WaitMS)
	}
	if d, ok := ev.TLS.TunnelTTFB(); ok && len(ev.HTTP) == 0 {
		observeMS(ttfb, &d)
	}
}

// observeMS observes a millisecond field in seconds, the Prometheus unit;
// null fields were not measured and are skipped.
func observeMS(o prometheus.Observer, ms *float64) {
	if ms != nil {
		o.Observe(*ms / 1000)
	}
}

// EventsSink is the events file writer as metrics sees it
// (*eventlog.Sink).
type EventsSink interface {
	Stats() eventlog.Stats
	Health() error
}

// WatchEvents exports s's counters and makes /healthz report s's health.
// Call it before Handler or Serve.
func (m *Metrics) WatchEvents(s EventsSink) {
	m.reg.MustRegister(eventsCollector{s})
	m.health = s.Health
}

// eventsCollector reads the sink's counters at each scrape, so they are
// never a second count that could disagree with the sink's.
type eventsCollector struct{ s EventsSink }

var (
	eventsWritten = prometheus.NewDesc("inspectproxy_events_written_total",
		"Events written to the events file (gap records not included).", nil, nil)
	eventsDropped = prometheus.NewDesc("inspectproxy_events_dropped_total",
		"Events lost, by reason: queue_full (the writer was behind or stalled), write_error (disk full, I/O error), too_large (over limits.max_event_bytes), encode_error, shutdown (still queued when events.close_timeout ran out).",
		[]string{"reason"}, nil)
	eventsGaps = prometheus.NewDesc("inspectproxy_events_gap_records_total",
		"Gap records written to the events file, each stating events dropped before it.", nil, nil)
	eventsTorn = prometheus.NewDesc("inspectproxy_events_torn_lines_total",
		"Incomplete lines ended with a newline: found at the end of the events file (a crash mid-write) or left by a failed write.", nil, nil)
	eventsQueued = prometheus.NewDesc("inspectproxy_events_queued",
		"Events waiting for the events file writer.", nil, nil)
	eventsQueuedBytes = prometheus.NewDesc("inspectproxy_events_queued_bytes",
		"Bytes of events waiting for the events file writer (bounded by events.queue_bytes).", nil, nil)
)

func (c eventsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{eventsWritten, eventsDropped, eventsGaps, eventsTorn, eventsQueued, eventsQueuedBytes} {
		ch <- d
	}
}

func (c eventsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(eventsWritten, prometheus.CounterValue, float64(st.Written))
	for _, r := range eventlog.Reasons {
		ch <- prometheus.MustNewConstMetric(eventsDropped, prometheus.CounterValue, float64(st.Dropped[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(eventsGaps, prometheus.CounterValue, float64(st.Gaps))
	ch <- prometheus.MustNewConstMetric(eventsTorn, prometheus.CounterValue, float64(st.TornLines))
	ch <- prometheus.MustNewConstMetric(eventsQueued, prometheus.GaugeValue, float64(st.Queued))
	ch <- prometheus.MustNewConstMetric(eventsQueuedBytes, prometheus.GaugeValue, float64(st.QueuedBytes))
}

// Handler serves /metrics in the Prometheus exposition formats,
// /healthz: "ok", or 503 with the reason while events are being lost, and
// Go's profiles under /debug/pprof/ (the admin listener is loopback only),
// for finding where a connection's CPU goes on a live proxy.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if m.health != nil {
			if err := m.health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, err)
				return
			}
		}
		fmt.Fprint(w, "ok\n")
	})
	return mux
}

// Listen opens the admin listener on addr. Unless allowRemote is set it
// refuses addresses other hosts can reach, the unspecified ":port"
// included: the listener has no authentication.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: admin address: %w", err)
	}
	if !allowRemote && !isLoopback(host) {
		return nil, fmt.Errorf("%w: %q: the admin listener has no authentication; use 127.0.0.1, ::1 or localhost (from another machine, reach it through an SSH tunnel)", ErrNotLoopback, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	// A name was checked above by what it says; the address bound is
	// what counts (localhost may resolve elsewhere in /etc/hosts).
	if !allowRemote && !access.BoundLoopback(ln.Addr()) {
		ln.Close()
		return nil, fmt.Errorf("%w: %q bound %s: the admin listener has no authentication; use 127.0.0.1 or ::1", ErrNotLoopback, addr, ln.Addr())
	}
	return ln, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Timeouts of the admin server: scrapes are small, so slow clients are
// cut off rather than held.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = time.Minute
	shutdownTimeout   = 5 * time.Second
)

// Serve serves Handler on ln until ctx ends, then shuts down gracefully,
// letting scrapes in progress finish for a few seconds. It returns nil
// after a shutdown and the server's error otherwise. It closes ln.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *zap.Logger) error {
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          zap.NewStdLog(log.Named("metrics")),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("admin listener serving /metrics and /healthz", zap.Stringer("addr", ln.Addr()))

	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("metrics: shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	return err
}
