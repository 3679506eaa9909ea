package report

import (
	"cmp"
	"slices"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
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
}

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
	b.events++
	b.kinds[ev.Kind]++
	if !ev.Start.IsZero() && (b.start.IsZero() || ev.Start.Before(b.start)) {
		b.start = ev.Start
	}
	if ev.End.After(b.end) {
		b.end = ev.End
	}
	b.waterfall.add(ev)
	if ev.Kind == event.KindTunnel {
		h := b.host(hostKey(ev.Target))
		h.conn(ev.TCP, ev.TLS, ev.Error)
		if v, ok := tunnelTTFB(ev.TLS); ok {
			h.sample(iTTFB, &v)
		}
		return
	}
	// http and mitm: ev.TCP repeats Upstreams[0], so only Upstreams count.
	for i := range ev.Upstreams {
		up := &ev.Upstreams[i]
		target := up.Target
		if target == "" {
			target = ev.Target
		}
		b.host(hostKey(target)).conn(&up.TCP, up.TLS, up.Error)
	}
	for i := range ev.HTTP {
		rq := &ev.HTTP[i]
		h := b.host(requestHost(ev, rq))
		h.Requests++
		if rq.Reused {
			h.Reused++
		}
		if rq.Error != "" {
			h.Errors++
		}
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

func (b *builder) report() *Report {
	rep := &Report{
		Events: b.events,
		Kinds:  b.kinds,
		Start:  b.start,
		End:    b.end,
		Hosts:  make([]Host, 0, len(b.hosts)),
	}
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
