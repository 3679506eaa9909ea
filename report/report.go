// Package report turns an events file into a latency-breakdown report (per
// target host: percentiles of DNS, TCP connect, TLS handshake, time to first
// byte, receive and total, plus close behaviour) in text, JSON, CSV or HTML,
// and into a HAR 1.2 archive.
//
// Both read the events as a stream: memory grows with the number of hosts and
// measured samples (one float64 per sample), never with the events themselves.
//
// Percentiles are nearest-rank: for n sorted samples, pP is the sample of rank
// ceil(P/100 × n), so every reported value is one that was measured. Null
// (unmeasured) fields are left out of the samples, never counted as 0; each
// phase reports its sample count n.
//
// Phases, all in milliseconds:
//
//	dns      tcp.dns_ms of each upstream connection (null for IP literals)
//	connect  tcp.connect_ms, the three-way handshake
//	tls      tls.handshake_ms: the tunnel's handshake, or the upstream
//	         handshake of a mitm connection
//	ttfb     http and mitm: http[].wait_ms of each request. Tunnels: the
//	         proxy sees no HTTP, so ttfb is first_app_data_down_ms −
//	         first_app_data_up_ms, from the client's first application-data
//	         record to the server's first one after it (the first request's
//	         send + wait); unmeasured when either is missing or down < up.
//	         In TLS 1.3 that server record may be a NewSessionTicket, which
//	         looks like data on the wire: then ttfb is a lower bound
//	receive  http[].receive_ms of each request (tunnels: unmeasurable)
//	total    tcp.duration_ms of each upstream connection that connected: the
//	         connection's whole life, idle keep-alive time included
package report

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/scope"
)

// Errors returned by Build, Write and WriteHAR.
var (
	ErrNoEvents = errors.New("report: no event in the input")
	ErrFormat   = errors.New("report: unknown format")
)

// DefaultWaterfall is how many connections each HTML waterfall shows when
// Options.Waterfall is 0.
const DefaultWaterfall = 40

// Options tunes Build and WriteHAR.
type Options struct {
	// Progress, if set, receives a progress line ("\r"-rewritten) as the
	// input is read, and a final one ending in a newline.
	Progress io.Writer
	// Size is the input's size in bytes, for a percentage; 0 if unknown.
	Size int64
	// Waterfall bounds the connections kept for the HTML waterfalls: the
	// first Waterfall by start time and the slowest Waterfall. 0 means
	// DefaultWaterfall.
	Waterfall int
	// Version is written as the HAR creator's version.
	Version string
	// Filter, if set, keeps only the events in its scope.
	Filter *scope.Filter
	// ProgressFrom is the input size (known, or read so far) from which
	// progress is written: a small file needs none. 0 means 32 MB.
	ProgressFrom int64
}

// Phase names, in the order they appear in Host.Phases.
const (
	PhaseDNS     = "dns"
	PhaseConnect = "connect"
	PhaseTLS     = "tls"
	PhaseTTFB    = "ttfb"
	PhaseReceive = "receive"
	PhaseTotal   = "total"
)

// phaseNames indexes phase samples; its order is the report's column order.
var phaseNames = [...]string{PhaseDNS, PhaseConnect, PhaseTLS, PhaseTTFB, PhaseReceive, PhaseTotal}

const (
	iDNS = iota
	iConnect
	iTLS
	iTTFB
	iReceive
	iTotal
	nPhases
)

// Report is the latency breakdown of an events file.
type Report struct {
	// Events is the number of client connections read; Kinds splits it.
	Events int            `json:"events"`
	Kinds  map[string]int `json:"kinds"`
	// Malformed counts input lines that were not events and were skipped;
	// FirstMalformed is the first one's error.
	Malformed      int    `json:"malformed_lines"`
	FirstMalformed string `json:"first_malformed,omitempty"`
	// Start and End span the connections: earliest start, latest end.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Filter describes the scope the report was limited to, if any.
	Filter string `json:"filter,omitempty"`
	// Lost sums the gap records: events the proxy could not write.
	Lost *Lost `json:"lost,omitempty"`
	// Uncharted counts events of kinds the report does not chart (dns, udp).
	Uncharted map[string]int `json:"uncharted,omitempty"`
	// Failures are the connections that failed, per host and reason,
	// most first.
	Failures []Failure `json:"failures"`
	// Hosts are sorted by connections, then requests, most first, then by
	// name.
	Hosts []Host `json:"hosts"`
	// first and slowest are the connections the HTML waterfalls draw: the
	// earliest started, in start order, and the slowest (conn.keyMS),
	// slowest first.
	first, slowest []conn
}

// Lost is what the gap records of the input say was lost.
type Lost struct {
	Events int64     `json:"events"`
	Gaps   int       `json:"gaps"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Reason string    `json:"reason,omitempty"`
}

// Failure counts the failed connections to one host for one reason (an
// outcome class: dns, refused, timeout, tls_alert, verify, proxy_refused, ...).
type Failure struct {
	Host      string    `json:"host"`
	Reason    string    `json:"reason"`
	Count     int       `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	// Example is the first one's evidence.
	Example string `json:"example"`
}

// Host is the breakdown for one target host:port.
type Host struct {
	Name string `json:"host"`
	// Connections counts upstream TCP connections (one per tunnel).
	Connections int `json:"connections"`
	// Requests counts http and mitm requests; Reused those sent on a
	// connection that was already open.
	Requests int `json:"requests"`
	Reused   int `json:"reused"`
	// Errors counts the connections and requests that failed, each failure
	// once even when its upstream and its request both record it.
	Errors int     `json:"errors"`
	Phases []Phase `json:"phases"`
	Close  Close   `json:"close"`
}

// Phase is the distribution of one phase's measured samples.
type Phase struct {
	Name string `json:"phase"`
	Stats
}

// Stats are nearest-rank percentiles in milliseconds; nil when N is 0.
type Stats struct {
	N   int      `json:"n"`
	P50 *float64 `json:"p50_ms"`
	P95 *float64 `json:"p95_ms"`
	P99 *float64 `json:"p99_ms"`
	Max *float64 `json:"max_ms"`
}

// Close is how a host's upstream connections ended.
type Close struct {
	// Who sent the first FIN; NoFIN counts connections without one (reset,
	// failed, or closed by the proxy without a half-close).
	ClientFirst int `json:"client_fin_first"`
	ServerFirst int `json:"server_fin_first"`
	ProxyFirst  int `json:"proxy_fin_first"`
	NoFIN       int `json:"no_fin"`
	// Resets by the side that sent the RST.
	RSTClient int `json:"rst_client"`
	RSTServer int `json:"rst_server"`
	RSTProxy  int `json:"rst_proxy"`
	// Timeouts counts connections ended by a proxy timeout.
	Timeouts int `json:"timeouts"`
	// HalfClose is the time between the two FINs.
	HalfClose Stats `json:"half_close"`
}

// Build reads events from r and computes the report.
func Build(r io.Reader, opts Options) (*Report, error) {
	b := newBuilder(opts)
	st, err := scan(r, opts, false, func(ev *event.Event) error {
		b.add(ev)
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep := b.report()
	rep.Malformed = st.malformed
	if st.firstMalformed != nil {
		rep.FirstMalformed = st.firstMalformed.Error()
	}
	if opts.Filter != nil {
		rep.Filter = opts.Filter.String()
	}
	return rep, nil
}

// scanStats is what scan learnt besides the events.
type scanStats struct {
	events         int
	malformed      int
	firstMalformed error
}

// progressStep is how often, in bytes, progress of an input of unknown size
// is written.
const progressStep = 64 << 20

// Stream reads events for a report (report, ats report): in order,
// decoded on every CPU with the fields ro asks for, those opts.Filter
// keeps, with progress written to opts.Progress. A line that is not an
// event comes back as its error (event.IsLineError) for the caller to
// count.
type Stream struct {
	er       *event.Reader
	consumed func() int64
	p        *progress
	filter   *scope.Filter
	events   int
}

// NewStream reads r (an event.Input's size and compressed position are
// used when r is one); Close it when done.
func NewStream(r io.Reader, opts Options, ro event.ReadOptions) *Stream {
	er := event.NewReaderOptions(r, ro)
	consumed := er.BytesRead
	if c, ok := r.(interface{ Consumed() int64 }); ok {
		// Compressed input: progress in bytes on disk, as its size is.
		consumed = c.Consumed
	}
	return &Stream{er: er, consumed: consumed, p: newProgress(opts.Progress, opts.Size, opts.ProgressFrom), filter: opts.Filter}
}

// Next is the next event the filter keeps, or a line's error, or io.EOF.
func (s *Stream) Next() (*event.Event, error) {
	for {
		ev, err := s.er.Next()
		if err != nil {
			return nil, err
		}
		if s.filter == nil || s.filter.Keep(ev) {
			s.events++
			s.p.update(s.consumed(), s.events)
			return ev, nil
		}
	}
}

// Done ends the progress line.
func (s *Stream) Done() { s.p.done(s.consumed(), s.events) }

// Close stops the decoders.
func (s *Stream) Close() { s.er.Close() }

// scan streams events from r to fn, in order, decoded on every CPU with
// the fields no report reads skipped. Lines that are not events (a torn
// last line after a crash, a line over event.MaxLine) are skipped and
// counted; an input with no event at all is an error. Read errors and fn's
// errors end the scan.
func scan(r io.Reader, opts Options, headers bool, fn func(*event.Event) error) (scanStats, error) {
	var st scanStats
	s := NewStream(r, opts, event.ReadOptions{Lean: true, NoChain: true, Headers: headers, Workers: event.Workers()})
	defer s.Close()
	for {
		ev, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if !event.IsLineError(err) {
				return st, fmt.Errorf("report: after %d events: %w", st.events, err)
			}
			st.malformed++
			if st.firstMalformed == nil {
				st.firstMalformed = err
			}
			continue
		}
		st.events++
		if err := fn(ev); err != nil {
			return st, err
		}
	}
	s.Done()
	if st.events == 0 && st.malformed > 0 {
		return st, fmt.Errorf("%w: %d malformed lines, the first: %w", ErrNoEvents, st.malformed, st.firstMalformed)
	}
	return st, nil
}

// defaultProgressFrom is Options.ProgressFrom's default.
const defaultProgressFrom = 32 << 20

// progress writes "\r"-rewritten progress lines to a terminal: when the
// percentage changes if the size is known, else every progressStep bytes;
// nothing for an input under its threshold. A nil progress writes nothing.
type progress struct {
	w    io.Writer
	size int64
	from int64
	last int64 // last percentage, or last step, written
}

// newProgress writes to w (nil: nowhere) the progress of reading an input
// of size bytes (0: unknown), once it reaches from bytes (0: 32 MB).
func newProgress(w io.Writer, size, from int64) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w, size: size, from: cmp.Or(from, defaultProgressFrom)}
}

// update reports n bytes and events read so far.
func (p *progress) update(n int64, events int) {
	if p == nil || max(p.size, n) < p.from {
		return
	}
	mark := n / progressStep
	if p.size > 0 {
		mark = min(n*100/p.size, 100)
	}
	if mark == p.last {
		return
	}
	p.last = mark
	p.write(n, events, "")
}

// done ends the progress line; n only grows, so an input that reached
// the threshold in update reaches it here too.
func (p *progress) done(n int64, events int) {
	if p != nil && max(p.size, n) >= p.from {
		p.write(n, events, "\n")
	}
}

func (p *progress) write(n int64, events int, end string) {
	if p.size > 0 {
		fmt.Fprintf(p.w, "\rreading events: %3d%% of %s, %d events%s", min(n*100/p.size, 100), byteSize(p.size), events, end)
		return
	}
	fmt.Fprintf(p.w, "\rreading events: %s, %d events%s", byteSize(n), events, end)
}

// byteSize formats n in decimal units, as file managers do.
func byteSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// hostKey is the host:port a connection or request is grouped under,
// lower-cased so that one host is one row.
func hostKey(target string) string {
	return strings.ToLower(target)
}

// urlHostKey is hostKey for a request URL, with the scheme's default port
// added so that it matches the upstream's host:port.
func urlHostKey(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", false
	}
	if u.Port() != "" {
		return hostKey(u.Host), true
	}
	port := "80"
	if u.Scheme == "https" || u.Scheme == "wss" {
		port = "443"
	}
	return hostKey(net.JoinHostPort(u.Hostname(), port)), true
}

// requestHost is the host a request is grouped under: its upstream's, else
// its URL's, else the client connection's target.
func requestHost(ev *event.Event, rq *event.HTTP) string {
	if up := upstream(ev, rq.UpstreamID); up != nil && up.Target != "" {
		return hostKey(up.Target)
	}
	if k, ok := urlHostKey(rq.URL); ok {
		return k
	}
	return hostKey(ev.Target)
}

// connHost names a client connection's host as its host rows do: a plain
// HTTP connection's target has no port, its upstream's and URLs' do.
func connHost(ev *event.Event) string {
	switch {
	case ev.Kind != event.KindTunnel && len(ev.Upstreams) > 0 && ev.Upstreams[0].Target != "":
		return hostKey(ev.Upstreams[0].Target)
	case ev.Kind != event.KindTunnel && len(ev.HTTP) > 0:
		return requestHost(ev, &ev.HTTP[0])
	case ev.Target == "":
		return "(no target)"
	}
	return hostKey(ev.Target)
}

// upstream finds an upstream by id; nil if the event has none with it.
func upstream(ev *event.Event, id int) *event.Upstream {
	if i := upstreamIndex(ev, id); i >= 0 {
		return &ev.Upstreams[i]
	}
	return nil
}

// upstreamIndex is the index in ev.Upstreams of the upstream with id, or -1.
func upstreamIndex(ev *event.Event, id int) int {
	return slices.IndexFunc(ev.Upstreams, func(u event.Upstream) bool { return u.ID == id })
}

// tunnelTTFB is the passthrough time to first byte described in the package
// comment; ok is false when it was not measured.
func tunnelTTFB(t *event.TLS) (float64, bool) {
	d, ok := t.TunnelTTFB()
	return roundUS(d), ok
}

// jsonIndent writes v as indented JSON, the form every JSON output uses.
func jsonIndent(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
