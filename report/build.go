package report

import (
	"cmp"
	"slices"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/outcome"
)

// builder accumulates samples per host. It keeps no event: only counts,
// float64 samples and the bounded waterfall selections.
type builder struct {
	hosts     map[string]*hostAcc
	kinds     map[string]int
	events    int
	start     time.Time
	end       time.Time
	waterfall *waterfall
	failures  map[failureKey]*Failure
	lost      Lost
	uncharted map[string]int
}

type failureKey struct{ host, reason string }

// hostAcc is a Host being accumulated.
type hostAcc struct {
	Host
	samples   [nPhases][]float64
	halfClose []float64
}

func newBuilder(opts Options) *builder {
	n := opts.Waterfall
	if n <= 0 {
		n = DefaultWaterfall
	}
	return &builder{
		hosts:     map[string]*hostAcc{},
		kinds:     map[string]int{},
		waterfall: newWaterfall(n),
		failures:  map[failureKey]*Failure{},
		uncharted: map[string]int{},
	}
}

func (b *builder) host(key string) *hostAcc {
	h := b.hosts[key]
	if h == nil {
		h = &hostAcc{Host: Host{Name: key}}
		b.hosts[key] = h
	}
	return h
}

func (b *builder) add(ev *event.Event) {
	switch ev.Kind {
	case event.KindGap:
		b.lost.add(ev)
		return
	case event.KindDNS, event.KindUDP:
		// Not connections through the proxy's TCP path: counted, not charted.
		b.uncharted[ev.Kind]++
		return
	}
	b.events++
	b.kinds[ev.Kind]++
	if !ev.Start.IsZero() && (b.start.IsZero() || ev.Start.Before(b.start)) {
		b.start = ev.Start
	}
	if ev.End.After(b.end) {
		b.end = ev.End
	}
	oc := outcome.Of(ev)
	if oc.ByProxy() {
		return // the proxy's setup page: no latency to report
	}
	if oc.Failed() {
		b.failure(ev, oc)
	}
	b.waterfall.add(ev, oc)
	if ev.Kind == event.KindTunnel {
		h := b.host(hostKey(ev.Target))
		h.conn(ev.TCP, ev.TLS, ev.Error)
		if v, ok := tunnelTTFB(ev.TLS); ok {
			h.sample(iTTFB, &v)
		}
		return
	}
	if len(ev.Upstreams) == 0 && len(ev.HTTP) == 0 {
		// Nothing was forwarded (no request, or the proxy refused it): the
		// failures table has it; a host row would only count an error.
		return
	}
	// One failure is counted once per host, however many of the
	// connection's records (its upstream, its request) repeat it.
	counted := map[string]bool{}
	countErr := func(h *hostAcc, text string) {
		if text != "" && !counted[h.Name+"\x00"+text] {
			counted[h.Name+"\x00"+text] = true
			h.Errors++
		}
	}
	// http and mitm: ev.TCP repeats Upstreams[0], so only Upstreams count.
	for i := range ev.Upstreams {
		up := &ev.Upstreams[i]
		target := up.Target
		if target == "" {
			target = ev.Target
		}
		h := b.host(hostKey(target))
		h.conn(&up.TCP, up.TLS, "")
		countErr(h, up.Error)
	}
	for i := range ev.HTTP {
		rq := &ev.HTTP[i]
		h := b.host(requestHost(ev, rq))
		h.Requests++
		if rq.Reused {
			h.Reused++
		}
		countErr(h, rq.Error)
		h.sample(iTTFB, rq.WaitMS)
		h.sample(iReceive, rq.ReceiveMS)
	}
}

// conn accounts one upstream connection; tcp is nil when none was dialled.
func (h *hostAcc) conn(tcp *event.TCP, tls *event.TLS, errText string) {
	h.Connections++
	if errText != "" {
		h.Errors++
	}
	if tls != nil {
		h.sample(iTLS, tls.HandshakeMS)
	}
	if tcp == nil {
		return
	}
	h.sample(iDNS, tcp.DNSMS)
	h.sample(iConnect, tcp.ConnectMS)
	if tcp.ConnectMS != nil {
		h.sample(iTotal, &tcp.DurationMS)
	}
	c := &h.Close
	switch tcp.FirstFIN {
	case event.SideClient:
		c.ClientFirst++
	case event.SideServer:
		c.ServerFirst++
	case event.SideProxy:
		c.ProxyFirst++
	default:
		c.NoFIN++
	}
	switch tcp.RST {
	case event.SideClient:
		c.RSTClient++
	case event.SideServer:
		c.RSTServer++
	case event.SideProxy:
		c.RSTProxy++
	}
	if tcp.Timeout != "" {
		c.Timeouts++
	}
	if tcp.HalfCloseMS != nil {
		h.halfClose = append(h.halfClose, *tcp.HalfCloseMS)
	}
}

// sample records v if it was measured.
func (h *hostAcc) sample(phase int, v *float64) {
	if v != nil {
		h.samples[phase] = append(h.samples[phase], *v)
	}
}

// failure counts a failed connection under its host and reason.
func (b *builder) failure(ev *event.Event, oc outcome.Outcome) {
	host := connHost(ev)
	k := failureKey{host, oc.Reason}
	f := b.failures[k]
	if f == nil {
		f = &Failure{Host: host, Reason: oc.Reason, FirstSeen: ev.Start, Example: oc.Detail}
		b.failures[k] = f
	}
	f.Count++
	if ev.Start.Before(f.FirstSeen) {
		f.FirstSeen, f.Example = ev.Start, oc.Detail
	}
}

func (l *Lost) add(ev *event.Event) {
	l.Events += ev.Dropped
	l.Gaps++
	if l.From.IsZero() || ev.Start.Before(l.From) {
		l.From = ev.Start
	}
	if ev.End.After(l.To) {
		l.To = ev.End
	}
	if l.Reason == "" {
		l.Reason = ev.Error
	}
}

func (b *builder) report() *Report {
	rep := &Report{
		Events:    b.events,
		Kinds:     b.kinds,
		Start:     b.start,
		End:       b.end,
		Hosts:     make([]Host, 0, len(b.hosts)),
		Failures:  make([]Failure, 0, len(b.failures)),
		Uncharted: b.uncharted,
	}
	if b.lost.Gaps > 0 {
		rep.Lost = &b.lost
	}
	for _, f := range b.failures {
		rep.Failures = append(rep.Failures, *f)
	}
	slices.SortFunc(rep.Failures, func(a, b Failure) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), a.FirstSeen.Compare(b.FirstSeen), cmp.Compare(a.Host, b.Host), cmp.Compare(a.Reason, b.Reason))
	})
	for _, h := range b.hosts {
		h.Phases = make([]Phase, nPhases)
		for i, s := range h.samples {
			h.Phases[i] = Phase{Name: phaseNames[i], Stats: stats(s)}
		}
		h.Close.HalfClose = stats(h.halfClose)
		rep.Hosts = append(rep.Hosts, h.Host)
	}
	slices.SortFunc(rep.Hosts, func(a, b Host) int {
		return cmp.Or(cmp.Compare(b.Connections, a.Connections), cmp.Compare(b.Requests, a.Requests), cmp.Compare(a.Name, b.Name))
	})
	rep.first, rep.slowest = b.waterfall.rows()
	return rep
}

// stats sorts s in place and returns its nearest-rank percentiles.
func stats(s []float64) Stats {
	if len(s) == 0 {
		return Stats{}
	}
	slices.Sort(s)
	return Stats{
		N:   len(s),
		P50: rank(s, 50),
		P95: rank(s, 95),
		P99: rank(s, 99),
		Max: rank(s, 100),
	}
}

// rank is the nearest-rank p-th percentile of sorted s: the sample of rank
// ceil(p/100 × n), computed in integers so that p95 of 20 samples is the
// 19th, not a float rounding away from it.
func rank(s []float64, p int) *float64 {
	r := (p*len(s) + 99) / 100
	v := s[max(r, 1)-1]
	return &v
}
