package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/splice"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// pipeline serves every client stream the same way, whatever brought it
// (an HTTP CONNECT, SOCKS5, a WireGuard flow): dial (timed), read the
// ClientHello, route (passthrough or MITM, by SNI and policy), relay or
// decrypt, one event. Each part gets what it needs from here, not from
// the Server.
type pipeline struct {
	log     *zap.Logger
	lim     config.Limits
	dialer  *timing.Dialer
	policy  *access.Policy
	inspect *inspector
	mitm    *mitmLayer // nil when MITM is off
	conns   *connTracker
	pipes   *splice.Pool // the splice pipes every relay borrows from
	out     *emitter
	newID   func() string
	bounds  recordBounds
}

// newRecord starts the event of a stream that did not come with one.
func (p *pipeline) newRecord(st *stream.Stream) *record {
	id := st.ID
	if id == "" {
		id = p.newID()
	}
	rec := newRecord(id, st.Start, st.Client.String(), st.Source, p.log, p.out, p.bounds)
	rec.ev.Peer = st.Peer
	return rec
}

// Serve is the pipeline's entry for sources outside the HTTP listener
// (SOCKS5, WireGuard): it admits the stream (a slot, shutdown), serves it
// and writes its event.
func (p *pipeline) Serve(st *stream.Stream) {
	slot := p.conns.admit()
	rec := p.newRecord(st)
	rec.release = func() { p.conns.free(slot) }
	defer p.conns.done()
	if !slot || p.conns.inShutdown() {
		msg := p.conns.refusal(slot)
		rec.setKind(event.KindTunnel, st.Target)
		rec.setLimit("limits.max_connections", msg)
		st.Refuse(stream.Refusal{Reason: stream.Overloaded, Err: errors.New(msg)})
		rec.finish(nil)
		return
	}
	p.serve(st, rec)
}

// serve runs one stream to its end and finishes rec.
func (p *pipeline) serve(st *stream.Stream, rec *record) {
	rec.setKind(event.KindTunnel, target(st))
	rec.publish(PhaseAccepted)
	t := &tunnelState{rec: rec, close: &timing.Close{}}
	t.close.Mark(event.SideClient, timing.HistAccept)
	defer func() { rec.finish(t.build(p, st)) }()

	t.dialAt = rec.since()
	d, err := p.dialerFor(st.Client).Dial(p.conns.base, st.Target)
	t.dial = d
	if err != nil {
		t.err = err
		reason := stream.Unreachable
		if errors.Is(err, timing.ErrDenied) {
			reason = stream.Denied
		}
		st.Refuse(stream.Refusal{Reason: reason, Err: err})
		rec.publish(PhaseConnected)
		return
	}
	t.close.Mark(event.SideServer, timing.HistSynAck)
	client, early, err := st.Accept(d.Remote)
	if err != nil {
		t.err = fmt.Errorf("proxy: answer the client: %w", err)
		_ = d.Conn.Close()
		return
	}
	t.server = d.Conn
	if rec.watched() {
		// The console draws DNS, the attempts and the handshake as soon
		// as they are known.
		tcp := tcpFacts(d, t.dialAt, t.close, 0, 0, rec.since())
		rec.update(func(ev *event.Event) { ev.TCP = &tcp })
	}
	rec.publish(PhaseConnected)
	t.tracker = tlsinfo.NewTracker(p.lim.InspectBuffer)
	r := newRelay(client, d.Conn, t.tracker, p.lim, rec.since, p.conns.onCut, t.close, p.pipes)
	if p.out.live != nil {
		prog := &progress{rec: rec, tracker: t.tracker, close: t.close}
		r.fed = prog.update
	}
	t.relay = r
	earlyFed := false
	if !p.out.recorded(rec.ev.Target) {
		// Out of capture scope: relayed, not inspected, no event.
		t.tracker.Stop()
	} else if p.mitm != nil {
		h := readHello(client, early, t.tracker, p.lim.HelloTimeout, rec.since)
		early, earlyFed = h.bytes, true
		if h.timedOut {
			r.helloWait.Store(true)
		}
		if dec := p.mitm.route(target(st), h); dec.mitm {
			t.mitm = true
			p.mitm.serve(rec, client, h, t.tracker, d, t.dialAt)
			return
		} else if dec.skipped != "" {
			rec.update(func(ev *event.Event) { ev.MITMSkipped = dec.skipped })
		}
	}
	r.run(early, earlyFed)
}

// progress publishes a stream's handshake and close milestones to the
// live console as the tracker and the relay reach them.
type progress struct {
	rec     *record
	tracker *tlsinfo.Tracker
	close   *timing.Close
	mu      sync.Mutex
	done    map[string]bool
}

func (p *progress) update() {
	if !p.rec.out.live.Active() {
		return
	}
	info := p.tracker.Info()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		p.done = make(map[string]bool)
	}
	for _, m := range []struct {
		phase   string
		reached bool
	}{
		{PhaseClientHello, info.ClientHello != nil},
		{PhaseServerHello, info.ServerHello != nil},
		{PhaseHandshakeDone, info.HandshakeDoneAt >= 0},
		{PhaseFirstFIN, p.close.FirstFIN() != ""},
	} {
		if m.reached && !p.done[m.phase] {
			p.done[m.phase] = true
			p.rec.update(func(ev *event.Event) { ev.TLS = info.Event() })
			p.rec.publish(m.phase)
		}
	}
}

// dialerFor is the dialer for one client's streams: the access policy
// checks every address a name resolves to, as that client may reach it.
func (p *pipeline) dialerFor(client netip.AddrPort) *timing.Dialer {
	d := *p.dialer
	d.Deny = p.policy.DenyFor("tcp", client)
	return &d
}

// target is what the event shows as the stream's target: the name the
// client looked up, when the source knows it, else what it asked for.
func target(st *stream.Stream) string {
	if st.Lookup != nil {
		if _, port, err := net.SplitHostPort(st.Target); err == nil {
			return net.JoinHostPort(st.Lookup.Name, port)
		}
	}
	return st.Target
}

// tunnelState is what one stream's layers learned, turned into its event
// by build.
type tunnelState struct {
	rec     *record
	close   *timing.Close
	dial    *timing.Dialed
	dialAt  time.Duration
	server  *net.TCPConn
	tracker *tlsinfo.Tracker
	relay   *relay
	mitm    bool // the MITM layer owned the stream and wrote its facts
	err     error
}

// build completes a passthrough stream's event: TCP from the dial and the
// relay, TLS from the tracker (and the chain, probed if TLS 1.3 hid it).
func (t *tunnelState) build(p *pipeline, st *stream.Stream) func(ev *event.Event) {
	return func(ev *event.Event) {
		if t.mitm {
			return
		}
		end := t.rec.since()
		var up, down int64
		if r := t.relay; r != nil {
			up, down = r.sent(tlsinfo.ClientToServer), r.sent(tlsinfo.ServerToClient)
			if r.err != nil && t.err == nil {
				t.err = r.err
			}
		}
		if t.dial != nil {
			tcp := tcpFacts(t.dial, t.dialAt, t.close, up, down, end)
			// A stream's TCP connection runs from the client's accept.
			tcp.DurationMS = timing.MS(end)
			if st.Lookup != nil {
				tcp.DNSMS = timing.MSPtr(st.Lookup.Duration)
			}
			ev.TCP = &tcp
		}
		if t.server != nil {
			p.inspect.fillTLS(ev, t.tracker.Info(), st.Target, t.relay.helloWait.Load(), t.rec.log)
		}
		if t.err != nil && ev.Error == "" {
			ev.Error = t.err.Error()
		}
	}
}

// tcpFacts fills an event.TCP from a dial and a close record; end is when
// the connection closed, both since the client's accept. Its duration runs
// from the dial.
func tcpFacts(d *timing.Dialed, dialAt time.Duration, cl *timing.Close, up, down int64, end time.Duration) event.TCP {
	t := event.TCP{
		DNSMS:      timing.MSPtr(d.DNS),
		ConnectMS:  timing.MSPtr(d.Connect),
		DialAtMS:   timing.MSPtr(dialAt),
		BytesUp:    up,
		BytesDown:  down,
		DurationMS: timing.MS(end - dialAt),
	}
	if d.Remote.IsValid() {
		t.RemoteAddr = d.Remote.String()
		t.ConnectAt = timing.MS(dialAt + d.ConnectedAt)
	}
	t.Attempts = timing.EventAttempts(d.Attempts, dialAt)
	snap := cl.Snapshot()
	t.FirstFIN, t.RST, t.RSTCause, t.Timeout, t.History = snap.FirstFIN, snap.RST, snap.RSTCause, snap.Timeout, snap.History
	if snap.RST != "" {
		t.RSTMS = timing.MSPtr(snap.RSTAt)
	}
	if v, ok := snap.FIN[event.SideClient]; ok {
		t.ClientFINMS = timing.MSPtr(v)
	} else if v, ok := snap.FIN[event.SideProxy]; ok {
		t.ClientFINMS = timing.MSPtr(v)
	}
	if v, ok := snap.FIN[event.SideServer]; ok {
		t.ServerFINMS = timing.MSPtr(v)
	}
	if snap.HalfClose >= 0 {
		t.HalfCloseMS = timing.MSPtr(snap.HalfClose)
	}
	return t
}

// hello is what readHello got: the client's first bytes (all given to the
// tracker), and the ClientHello if they held one.
type hello struct {
	bytes    []byte
	info     tlsinfo.Info
	timedOut bool
	err      error // a read error that ended the wait
}

// sni is the name the client asked for in its ClientHello, if any.
func (h hello) sni() string {
	if h.info.ClientHello == nil {
		return ""
	}
	return h.info.ClientHello.SNI
}

// serverName is the name a TLS stream is for: its SNI, else the host of
// the target it was sent to.
func serverName(sni, target string) string {
	if sni != "" {
		return sni
	}
	host, _, _ := net.SplitHostPort(target)
	return host
}

// readHello reads the client's first bytes, feeding the tracker, until it
// has the ClientHello, knows the stream is not TLS, or hello_timeout
// passes. Nothing is forwarded yet: the route depends on what it finds.
// The tracker's inspection buffer bounds what is held.
func readHello(c net.Conn, early []byte, tr *tlsinfo.Tracker, timeout time.Duration, since func() time.Duration) hello {
	h := hello{bytes: early}
	if len(early) > 0 && !tr.Feed(tlsinfo.ClientToServer, early, since()) || helloSeen(tr) {
		h.info = tr.Info()
		return h
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	bp := bufPool.Get().(*[]byte) // the relay's: what is read is copied out
	defer bufPool.Put(bp)
	buf := (*bp)[:16<<10]
	for {
		n, err := c.Read(buf)
		if n > 0 {
			h.bytes = append(h.bytes, buf[:n]...)
			more := tr.Feed(tlsinfo.ClientToServer, buf[:n], since())
			if !more || helloSeen(tr) {
				break
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				h.timedOut = len(h.bytes) == 0
				if h.timedOut {
					tr.Stop()
				}
			} else {
				h.err = err
			}
			break
		}
	}
	h.info = tr.Info()
	return h
}

func helloSeen(tr *tlsinfo.Tracker) bool { return tr.Info().ClientHello != nil }

// refusalStatus maps a refusal to the HTTP status a CONNECT gets.
func refusalStatus(r stream.Reason) int {
	switch r {
	case stream.Denied:
		return 403
	case stream.Overloaded:
		return 503
	}
	return 502
}

// addrPort is a net.Addr as a netip.AddrPort (the zero value if it is not
// an IP address).
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
