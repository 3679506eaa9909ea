package report

import (
	"cmp"
	"container/heap"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/outcome"
	"github.com/inspectproxy/inspectproxy/timing"
)

// Span phases the waterfall draws besides the Phase* names.
const (
	spanBlocked   = "blocked"
	spanSend      = "send"
	spanWait      = "wait"
	spanHalfClose = "half-close"
)

// maxSpans bounds the spans kept for one connection, so that a keep-alive
// connection with thousands of requests stays a bounded row.
const maxSpans = 64

// conn is one client connection as the waterfall draws it; times are
// milliseconds from the proxy's accept.
type conn struct {
	id, host, kind string
	start          time.Time
	endMS          float64 // the client connection's life
	// keyMS orders the slowest: http and mitm, time to the first response
	// byte (curl's time_starttransfer); tunnels, where the proxy sees no
	// HTTP, time to the TLS handshake done (else to the TCP connect). -1
	// when not measured, as for every failure: failures never rank.
	keyMS float64
	// focusMS is where the row's setup ends, for the axis: the first
	// response byte or the last setup step measured.
	focusMS float64
	// failed is the failure class, "" for a success; failDetail its evidence.
	failed, failDetail string
	spans              []span
	resets             []string // who reset, drawn at the row's end: the time is not recorded
	dropped            int      // spans past maxSpans, left out
}

type span struct {
	phase    string
	from, to float64
	note     string
}

func (c *conn) span(phase string, from, to float64, note string) {
	if len(c.spans) == maxSpans {
		c.dropped++
		return
	}
	c.spans = append(c.spans, span{phase: phase, from: from, to: to, note: note})
}

// layout turns an event into a waterfall row.
func layout(ev *event.Event, oc outcome.Outcome) conn {
	c := conn{
		id:         ev.ID,
		host:       connHost(ev),
		kind:       ev.Kind,
		start:      ev.Start,
		endMS:      timing.MS(ev.End.Sub(ev.Start)),
		failed:     oc.Reason,
		failDetail: oc.Detail,
		keyMS:      -1,
	}
	firstByte, setupEnd := -1.0, -1.0
	if ev.Kind == event.KindTunnel {
		if ready, ok := c.upstream(ev.TCP, ev.TLS, "", 0); ok {
			setupEnd = ready
		}
		if v, ok := tunnelTTFB(ev.TLS); ok {
			firstByte = *ev.TLS.AppDataDownMS
			c.span(spanWait, firstByte-v, firstByte, "first application data each way")
		}
	} else {
		ready := make([]float64, len(ev.Upstreams))
		for i := range ev.Upstreams {
			up := &ev.Upstreams[i]
			ready[i] = -1
			if r, ok := c.upstream(&up.TCP, up.TLS, fmt.Sprintf("upstream %d %s: ", up.ID, up.Target), dialFrom(ev, up.ID)); ok {
				ready[i] = r
				setupEnd = max(setupEnd, r)
			}
		}
		for i := range ev.HTTP {
			rq := &ev.HTTP[i]
			if fb, ok := c.request(rq, readyAt(ev, ready, rq)); ok && (firstByte < 0 || fb < firstByte) {
				firstByte = fb
			}
		}
	}
	c.focusMS = max(firstByte, setupEnd)
	if c.focusMS < 0 {
		c.focusMS = 0
		for _, s := range c.spans {
			c.focusMS = max(c.focusMS, s.to)
		}
	}
	switch {
	case oc.Failed():
	case ev.Kind == event.KindTunnel:
		c.keyMS = setupEnd
	default:
		c.keyMS = firstByte
	}
	return c
}

// dialFrom is when the dial of upstream id began, as far as the event
// tells: the first connect attempt, else the first request that used it.
func dialFrom(ev *event.Event, id int) float64 {
	for _, rq := range ev.HTTP {
		if rq.UpstreamID == id || rq.UpstreamID == 0 {
			return rq.StartMS + orZero(rq.BlockedMS)
		}
	}
	return 0
}

// upstream draws one upstream connection's setup and close and returns when
// it was ready for data: TCP connected, or TLS done if there was TLS.
func (c *conn) upstream(tcp *event.TCP, tls *event.TLS, prefix string, dialAt float64) (ready float64, ok bool) {
	switch {
	case tcp != nil && tcp.ConnectMS != nil:
		from := tcp.ConnectAt - *tcp.ConnectMS
		if tcp.DNSMS != nil {
			c.span(PhaseDNS, from-*tcp.DNSMS, from, prefix+"DNS")
		}
		c.span(PhaseConnect, from, tcp.ConnectAt, prefix+"TCP connect "+tcp.RemoteAddr)
		ready, ok = tcp.ConnectAt, true
	case tcp != nil && tcp.DNSMS != nil:
		// No connection: the lookup still took its time, from the dial on.
		from := dialAt
		if len(tcp.Attempts) > 0 {
			from = tcp.Attempts[0].StartMS - *tcp.DNSMS
		}
		c.span(PhaseDNS, max(from, 0), max(from, 0)+*tcp.DNSMS, prefix+"DNS (no connection followed)")
	}
	if tls != nil && tls.HandshakeMS != nil && tls.HandshakeDone != nil {
		c.span(PhaseTLS, *tls.HandshakeDone-*tls.HandshakeMS, *tls.HandshakeDone, prefix+"TLS handshake "+tls.Version)
		ready, ok = *tls.HandshakeDone, true
	}
	if tcp == nil {
		return ready, ok
	}
	if tcp.ClientFINMS != nil && tcp.ServerFINMS != nil {
		from, to := *tcp.ClientFINMS, *tcp.ServerFINMS
		if to < from {
			from, to = to, from
		}
		c.span(spanHalfClose, from, to, prefix+"half-close, first FIN by "+tcp.FirstFIN)
	}
	if tcp.RST != "" {
		c.resets = append(c.resets, prefix+"reset by "+tcp.RST)
	}
	return ready, ok
}

// readyAt is when rq's upstream was ready, or -1 if rq did not wait for it.
func readyAt(ev *event.Event, ready []float64, rq *event.HTTP) float64 {
	if i := upstreamIndex(ev, rq.UpstreamID); i >= 0 && !rq.Reused {
		return ready[i]
	}
	return -1
}

// request draws a request HAR-style, blocked, send, wait, receive in a row,
// with send starting once its new upstream connection was ready. It returns
// when the response's first byte came, if measured.
func (c *conn) request(rq *event.HTTP, ready float64) (firstByte float64, ok bool) {
	note := fmt.Sprintf("%s %s → %d", rq.Method, pathOf(rq.URL), rq.Status)
	t := rq.StartMS
	if rq.BlockedMS != nil {
		c.span(spanBlocked, t, t+*rq.BlockedMS, note)
		t += *rq.BlockedMS
	}
	t = max(t, ready)
	c.span(spanSend, t, t+rq.SendMS, note)
	t += rq.SendMS
	if rq.WaitMS == nil {
		return 0, false
	}
	c.span(spanWait, t, t+*rq.WaitMS, note)
	t += *rq.WaitMS
	if rq.ReceiveMS != nil {
		c.span(PhaseReceive, t, t+*rq.ReceiveMS, note)
	}
	return t, true
}

// pathOf is a request URL without scheme and host, which the row names.
func pathOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	return u.RequestURI()
}

// waterfall keeps the first n connections by start time and the n slowest,
// each in a heap whose root is the next to evict.
type waterfall struct {
	first, slowest connHeap
}

func newWaterfall(n int) *waterfall {
	return &waterfall{
		first:   connHeap{n: n, evictFirst: func(a, b *conn) bool { return a.start.After(b.start) }},
		slowest: connHeap{n: n, evictFirst: func(a, b *conn) bool { return a.keyMS < b.keyMS }},
	}
}

func (w *waterfall) add(ev *event.Event, oc outcome.Outcome) {
	c := layout(ev, oc)
	w.first.offer(c)
	if c.keyMS >= 0 {
		w.slowest.offer(c)
	}
}

// rows returns the first connections in start order and the slowest,
// slowest first.
func (w *waterfall) rows() (first, slowest []conn) {
	first, slowest = w.first.rows, w.slowest.rows
	slices.SortStableFunc(first, func(a, b conn) int { return a.start.Compare(b.start) })
	slices.SortStableFunc(slowest, func(a, b conn) int { return cmp.Compare(b.keyMS, a.keyMS) })
	return first, slowest
}

// connHeap is a bounded heap; evictFirst(a, b) says a goes before b.
type connHeap struct {
	n          int
	rows       []conn
	evictFirst func(a, b *conn) bool
}

// offer keeps c if there is room or it beats the root, which it replaces.
func (h *connHeap) offer(c conn) {
	if len(h.rows) < h.n {
		heap.Push(h, c)
		return
	}
	if !h.evictFirst(&h.rows[0], &c) {
		return
	}
	h.rows[0] = c
	heap.Fix(h, 0)
}

func (h *connHeap) Len() int           { return len(h.rows) }
func (h *connHeap) Less(i, j int) bool { return h.evictFirst(&h.rows[i], &h.rows[j]) }
func (h *connHeap) Swap(i, j int)      { h.rows[i], h.rows[j] = h.rows[j], h.rows[i] }
func (h *connHeap) Push(x any)         { h.rows = append(h.rows, x.(conn)) }
func (h *connHeap) Pop() any {
	c := h.rows[len(h.rows)-1]
	h.rows = h.rows[:len(h.rows)-1]
	return c
}
