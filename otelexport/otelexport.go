// Package otelexport sends every finished connection to an OpenTelemetry
// backend as one trace, so that a team running several proxies queries
// them in one place (Jaeger, Tempo, Elastic, ClickHouse behind an
// OpenTelemetry Collector) and sees each connection as a waterfall.
//
// It is an observer of finished events, not part of the proxy: a trace is
// built from the event alone, with the times the event recorded (ev.Start
// plus each *_ms), and handed to the official SDK's batch processor, which
// exports in the background. The connection pays for building the spans,
// never for the network: when the queue is full (a slow or dead
// collector) the whole trace is dropped and counted, so memory stays
// bounded and a trace is never half there.
package otelexport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"runtime/debug"
	"sync/atomic"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/metrics"
)

// Protocols of otlp.protocol and OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	ProtocolHTTPProtobuf = "http/protobuf"
	ProtocolHTTPJSON     = "http/json"
	ProtocolGRPC         = "grpc"
)

// scope is the instrumentation scope of every span.
const scope = "github.com/inspectproxy/inspectproxy/otelexport"

// Stats counts what became of traces and spans (outcomes are the
// metrics.OTLP* constants); *metrics.Metrics implements it.
type Stats interface {
	OTLPTrace(outcome string)
	OTLPSpans(outcome string, n int)
}

// Options are what New needs besides the configuration.
type Options struct {
	// Log receives start-up and export failures; nil logs nothing.
	Log *zap.Logger
	// Stats, optional, counts outcomes for /metrics.
	Stats Stats
	// Getenv reads the environment; nil is os.Getenv. The SDK itself
	// reads the OTEL_EXPORTER_OTLP_* variables it knows from the process.
	Getenv func(string) string
}

// Exporter turns finished events into traces. It implements the proxy's
// Observer (ConnOpened, ConnClosed) and is safe for concurrent use.
type Exporter struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	gate   *gate
	stats  Stats
}

// Enabled reports whether export is configured: otlp.endpoint, or the
// standard endpoint variables.
func Enabled(c config.OTLP, getenv func(string) string) bool {
	if getenv == nil {
		getenv = os.Getenv
	}
	return c.Endpoint != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// New builds the exporter and its SDK pipeline. It does not connect: the
// first export does, and failures are logged and counted, never fatal.
func New(ctx context.Context, c config.OTLP, o Options) (*Exporter, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	proto, err := protocol(c, o.Getenv)
	if err != nil {
		return nil, err
	}
	client, err := newClient(ctx, c, proto)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("inspectproxy"), semconv.ServiceVersion(version())),
		resource.WithHost(), resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, fmt.Errorf("otlp: resource: %w", err)
	}
	g := &gate{max: int64(c.QueueSize)}
	bspOpts := []sdktrace.BatchSpanProcessorOption{sdktrace.WithMaxQueueSize(c.QueueSize)}
	if c.Timeout > 0 {
		// The exporters' own timeout is per attempt for http (retries
		// follow) and per export for grpc: the processor's bounds both.
		bspOpts = append(bspOpts, sdktrace.WithExportTimeout(c.Timeout))
	}
	if c.QueueSize < sdktrace.DefaultMaxExportBatchSize {
		bspOpts = append(bspOpts, sdktrace.WithMaxExportBatchSize(c.QueueSize))
	}
	counted := &countingExporter{SpanExporter: client, gate: g, stats: o.Stats, log: o.Log.Named("otlp")}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SamplingRatio))),
		sdktrace.WithBatcher(counted, bspOpts...),
	)
	x := &Exporter{tp: tp, tracer: tp.Tracer(scope, trace.WithInstrumentationVersion(version())), gate: g, stats: o.Stats}
	o.Log.Info("OTLP trace export on", zap.String("endpoint", endpointForLog(c, o.Getenv)), zap.String("protocol", proto),
		zap.Float64("sampling_ratio", c.SamplingRatio), zap.Int("queue_size", c.QueueSize))
	return x, nil
}

// protocol is otlp.protocol, else the standard variables, else the
// specification's default.
func protocol(c config.OTLP, getenv func(string) string) (string, error) {
	if c.Protocol != "" {
		return c.Protocol, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		switch v := getenv(name); v {
		case "":
			continue
		case ProtocolHTTPProtobuf, ProtocolHTTPJSON, ProtocolGRPC:
			return v, nil
		default:
			return "", fmt.Errorf("otlp: %s=%q: want http/protobuf, http/json or grpc", name, v)
		}
	}
	return ProtocolHTTPProtobuf, nil
}

// newClient builds the OTLP exporter. Options are passed only for keys the
// configuration sets: the SDK has already applied the environment, and an
// option overrides it.
func newClient(ctx context.Context, c config.OTLP, proto string) (sdktrace.SpanExporter, error) {
	var tlsCfg *tls.Config
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("otlp: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("otlp: ca_file %s: no PEM certificate in it", c.CAFile)
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// The exporter dials directly, ignoring HTTPS_PROXY and the like: a
	// shell whose tools are pointed at inspectproxy must not send the
	// proxy's own traces through it, where each export would be traced.
	if proto == ProtocolGRPC {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithDialOption(grpc.WithNoProxy())}
		if c.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(c.Endpoint))
		}
		if len(c.Headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(c.Headers))
		}
		if tlsCfg != nil {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		if c.Timeout > 0 {
			opts = append(opts, otlptracegrpc.WithTimeout(c.Timeout))
		}
		e, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp: grpc exporter: %w", err)
		}
		return e, nil
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithProxy(func(*http.Request) (*url.URL, error) { return nil, nil })}
	if proto == ProtocolHTTPJSON {
		opts = append(opts, otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON))
	}
	if c.Endpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(tracesURL(c.Endpoint)))
	}
	if len(c.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(c.Headers))
	}
	if tlsCfg != nil {
		opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsCfg))
	}
	if c.Timeout > 0 {
		opts = append(opts, otlptracehttp.WithTimeout(c.Timeout))
	}
	e, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp: http exporter: %w", err)
	}
	return e, nil
}

// tracesURL appends the traces path to a base URL, as the specification
// says for OTEL_EXPORTER_OTLP_ENDPOINT.
func tracesURL(base string) string {
	u, err := url.Parse(base)
	if err != nil { // config.Validate has checked it
		return base
	}
	u.Path = path.Join("/", u.Path, "v1/traces")
	return u.String()
}

// endpointForLog names where traces go, without credentials a URL may carry.
func endpointForLog(c config.OTLP, getenv func(string) string) string {
	for _, v := range []string{c.Endpoint, getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT")} {
		if v != "" {
			return redactURL(v)
		}
	}
	return "the SDK's default"
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// ConnOpened does nothing: a trace is built when the connection closes.
func (x *Exporter) ConnOpened(string) {}

// ConnClosed exports ev as one trace, or drops it whole when the queue
// is full. It never waits for the network.
func (x *Exporter) ConnClosed(ev *event.Event) {
	if ev.Kind == event.KindGap { // a note about lost events, not a connection
		return
	}
	// The root's start decides sampling (by trace id alone), before any
	// work on the plan; a span is queued only when it ends, so a root that
	// is never ended costs nothing more.
	_, root := x.tracer.Start(context.Background(), rootName(ev), trace.WithTimestamp(ev.Start), trace.WithSpanKind(trace.SpanKindServer))
	if !root.SpanContext().IsSampled() {
		x.count(metrics.OTLPUnsampled, 0)
		return
	}
	spans := plan(ev)
	n := len(spans)
	if !x.gate.admit(n) {
		x.count(metrics.OTLPDropped, n)
		return
	}
	live := make([]trace.Span, n)
	live[0] = root
	root.SetAttributes(spans[0].attrs...)
	for i := range spans {
		s := &spans[i]
		sp := live[i]
		if i > 0 {
			opts := []trace.SpanStartOption{trace.WithTimestamp(s.start), trace.WithSpanKind(s.kind), trace.WithAttributes(s.attrs...)}
			if s.link >= 0 {
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: live[s.link].SpanContext()}))
			}
			_, sp = x.tracer.Start(trace.ContextWithSpan(context.Background(), live[s.parent]), s.name, opts...)
			live[i] = sp
		}
		for _, e := range s.events {
			sp.AddEvent(e.name, trace.WithTimestamp(e.at), trace.WithAttributes(e.attrs...))
		}
		if s.err != "" {
			sp.SetStatus(codes.Error, s.err)
		}
	}
	// Children first, so that a backend showing spans as they come never
	// shows a root missing its children.
	for i := n - 1; i >= 0; i-- {
		live[i].End(trace.WithTimestamp(spans[i].end))
	}
	x.count(metrics.OTLPQueued, 0)
}

func (x *Exporter) count(outcome string, spans int) {
	if x.stats == nil {
		return
	}
	x.stats.OTLPTrace(outcome)
	if spans > 0 {
		x.stats.OTLPSpans(outcome, spans)
	}
}

// Shutdown exports what is queued and stops, within ctx.
func (x *Exporter) Shutdown(ctx context.Context) error {
	if err := x.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("otlp: shutdown: %w", err)
	}
	return nil
}

// ForceFlush exports what is queued now, within ctx.
func (x *Exporter) ForceFlush(ctx context.Context) error {
	if err := x.tp.ForceFlush(ctx); err != nil {
		return fmt.Errorf("otlp: flush: %w", err)
	}
	return nil
}

// gate admits whole traces while the spans waiting for export fit in the
// batch processor's queue. The processor would otherwise drop single
// spans when full, leaving half traces, and it counts them in no stable
// API; with the gate its own queue never overflows.
type gate struct {
	max     int64
	pending atomic.Int64
}

func (g *gate) admit(n int) bool {
	if g.pending.Add(int64(n)) > g.max {
		g.pending.Add(-int64(n))
		return false
	}
	return true
}

func (g *gate) release(n int) { g.pending.Add(-int64(n)) }

// countingExporter counts each batch's outcome and gives its room back
// to the gate.
type countingExporter struct {
	sdktrace.SpanExporter
	gate  *gate
	stats Stats
	log   *zap.Logger
	fails atomic.Int64
}

// ExportSpans exports a batch. An error is logged and counted here and not
// returned: the batch processor would only pass it to the process-wide
// OpenTelemetry error handler, which prints outside the proxy's log.
func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.gate.release(len(spans))
	outcome := metrics.OTLPExported
	if err != nil {
		outcome = metrics.OTLPFailed
		// One line per failed batch: a batch fails at most once per
		// export timeout, so a dead collector cannot flood the log.
		e.log.Warn("OTLP export failed; spans lost", zap.Int("spans", len(spans)), zap.Int64("failed_batches", e.fails.Add(1)), zap.Error(err))
	}
	if e.stats != nil {
		e.stats.OTLPSpans(outcome, len(spans))
	}
	return nil
}
