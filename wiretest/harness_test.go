package wiretest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/internal/wirecap"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// Tolerances between the event and the wire. Both read the kernel's
// clock: an event time is ev.Start plus its *_ms, a wire time is the
// packet's kernel timestamp.
const (
	// finTolerance bounds client_fin_ms, server_fin_ms, half_close_ms and
	// the TLS times against the wire.
	finTolerance = 0.5
	// connectAbove bounds connect_ms above the SYN→SYN/ACK time; it can
	// never be below it (the dial starts before the SYN and ends after
	// the SYN/ACK), save for rounding to the microsecond.
	connectAbove = 0.25
	connectBelow = 0.002
)

func TestMain(m *testing.M) {
	code := m.Run()
	printDeviations()
	if code == 0 {
		if err := goleak.Find(testtool.IgnoreRSTWatch); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// sink is the proxy's Sink over a channel.
type sink struct{ ch chan *event.Event }

func (s *sink) Write(ev *event.Event) error { s.ch <- ev; return nil }

// proxyRun is a proxy serving on loopback.
type proxyRun struct {
	t      testing.TB
	addr   netip.AddrPort
	events *sink
	cancel context.CancelFunc
	done   chan error
}

// startProxy runs a proxy with the default configuration edited by edit,
// without the TLS 1.3 chain probe (its side connections would share the
// server's port in the capture).
func startProxy(t testing.TB, edit func(*config.Config)) *proxyRun {
	t.Helper()
	return startProxyWith(t, edit, proxy.Options{})
}

// startProxyWith is startProxy with options (a MITM issuer); its log and
// sink are the test's.
func startProxyWith(t testing.TB, edit func(*config.Config), opts proxy.Options) *proxyRun {
	t.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS.Probe = false
	cfg.Limits.ShutdownGrace = 2 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	p := &proxyRun{t: t, events: &sink{ch: make(chan *event.Event, 16)}, done: make(chan error, 1)}
	opts.Log, opts.Sink = zaptest.NewLogger(t), p.events
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	p.addr = netip.MustParseAddrPort(ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- srv.Serve(ctx, ln, nil) }()
	t.Cleanup(p.stop)
	return p
}

func (p *proxyRun) stop() {
	p.cancel()
	if err := <-p.done; err != nil {
		p.t.Errorf("proxy Serve: %v", err)
	}
	p.done <- nil // stop is idempotent
}

// event waits for the next event.
func (p *proxyRun) event() *event.Event {
	p.t.Helper()
	select {
	case ev := <-p.events.ch:
		return ev
	case <-time.After(20 * time.Second):
		p.t.Fatal("no event within 20s")
		return nil
	}
}

// connect opens a tunnel to target through the proxy and returns the
// connection after the 200, with nothing of the tunnel read.
func (p *proxyRun) connect(t testing.TB, target netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(p.addr))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	var head []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("CONNECT reply: %v after %q", err, head)
		}
		head = append(head, b[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200")) {
		t.Fatalf("CONNECT %s: %q", target, head)
	}
	return c
}

// tcpServer serves one scripted connection per accept on loopback.
func tcpServer(t testing.TB, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, handle)
}

func serveOn(t testing.TB, ln net.Listener, handle func(*net.TCPConn)) netip.AddrPort {
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		handle(c.(*net.TCPConn))
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

// capture starts capturing the given ports on loopback.
func capture(t testing.TB, ports ...netip.AddrPort) *wirecap.Capture {
	t.Helper()
	return captureOn(t, wirecap.Config{}, ports...)
}

func captureOn(t testing.TB, cfg wirecap.Config, ports ...netip.AddrPort) *wirecap.Capture {
	t.Helper()
	for _, p := range ports {
		cfg.Ports = append(cfg.Ports, p.Port())
	}
	c, err := wirecap.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stopCapture ends a capture; when the test fails, the pcapng is kept
// (its path is logged) for Wireshark.
func stopCapture(t testing.TB, c *wirecap.Capture) *wirecap.Trace {
	t.Helper()
	tr, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir, err := os.MkdirTemp("", "wiretest-")
		if err == nil {
			path := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".pcapng")
			if err = tr.WritePcapng(path); err == nil {
				t.Logf("capture kept in %s", path)
			}
		}
		if err != nil {
			t.Logf("capture not kept: %v", err)
		}
	})
	return tr
}

// legs is one proxied connection on the wire.
type legs struct {
	client   *wirecap.Conn // the client's connection to the proxy
	upstream *wirecap.Conn // the proxy's connection to the server; nil if none
	// reqLen and replyLen are the CONNECT request and reply in the client
	// leg's streams; the tunnel's bytes follow them.
	reqLen, replyLen int64
}

// findLegs finds ev's two legs in tr: the client leg by the event's client
// address; the upstream leg among the connections to server opened after
// it, by the bytes it carried (the tunnel's first bytes, a ClientHello with
// its random, are unique), else the first one.
func findLegs(t testing.TB, tr *wirecap.Trace, ev *event.Event, server netip.AddrPort) legs {
	t.Helper()
	client, err := netip.ParseAddrPort(ev.Client)
	if err != nil {
		t.Fatalf("event client %q: %v", ev.Client, err)
	}
	l := legs{client: tr.ConnFrom(client)}
	if l.client == nil {
		t.Fatalf("the client leg %s is not in the capture (%d connections)", client, len(tr.Conns))
	}
	l.reqLen = headLen(l.client.Client.Stream)
	l.replyLen = headLen(l.client.Server.Stream)
	sent := l.client.Client.Stream[l.reqLen:]
	for _, c := range tr.ConnTo(server) {
		if c.SYN.Before(l.client.SYN) {
			continue
		}
		got := c.Client.Stream
		if n := min(len(sent), len(got), 64); n > 0 && bytes.Equal(sent[:n], got[:n]) {
			l.upstream = c
			break
		}
		if l.upstream == nil && len(sent) == 0 {
			l.upstream = c
		}
	}
	return l
}

// headLen is the length of an HTTP head (through the blank line) at the
// start of b, or 0.
func headLen(b []byte) int64 {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return int64(i + 4)
	}
	return 0
}

// wire is what the capture says the event should say.
type wire struct {
	connectMS                       *float64
	clientFIN, serverFIN, halfClose *float64
	firstFIN                        string
	rst, rstCause                   string
	up, down                        int64
	history                         []letter
	// relay lists what the proxy itself did wrong on the wire (a reset
	// or FIN not passed on, bytes changed); relayLate, a reset it would
	// have passed on had it woken within the close times' tolerance,
	// before the other leg closed by itself.
	relay, relayLate []string
}

// letter is one history event at its wire time (ms since ev.Start).
type letter struct {
	c  byte
	at float64
}

// wire is the capture's story of ev's connection; tol is the scenario's
// tolerance for close times (expect.tol).
func (l legs) wire(ev *event.Event, tol float64) wire {
	ms := func(at time.Time) *float64 {
		if at.IsZero() {
			return nil
		}
		v := float64(at.Sub(ev.Start).Nanoseconds()) / 1e6
		return &v
	}
	c, u := l.client, l.upstream
	cl, px := c.Client, c.Server // the client, and the proxy on the client leg
	var w wire
	w.clientFIN = ms(cl.FIN)
	w.down = px.Bytes() - l.replyLen
	hist := []struct {
		c  byte
		at time.Time
	}{{'S', c.SYN}, {'F', cl.FIN}, {'R', cl.RST}}
	if at, ok := cl.FirstDataAfter(l.reqLen); ok {
		hist = append(hist, struct {
			c  byte
			at time.Time
		}{'D', at})
	}
	var srv, pu *wirecap.Side // the server, and the proxy on the upstream leg
	if u != nil {
		pu, srv = u.Client, u.Server
		w.connectMS = ms(u.SYNACK)
		if w.connectMS != nil {
			*w.connectMS = float64(u.SYNACK.Sub(u.SYN).Nanoseconds()) / 1e6
		}
		w.serverFIN = ms(srv.FIN)
		w.up = pu.Bytes()
		hist = append(hist, []struct {
			c  byte
			at time.Time
		}{{'h', u.SYNACK}, {'f', srv.FIN}, {'r', srv.RST}}...)
		if len(srv.Segments) > 0 {
			hist = append(hist, struct {
				c  byte
				at time.Time
			}{'d', srv.Segments[0].At})
		}
	}
	// Who closed first, and the half-closed time.
	switch {
	case w.clientFIN != nil && w.serverFIN != nil:
		w.firstFIN = "client"
		if *w.serverFIN < *w.clientFIN {
			w.firstFIN = "server"
		}
		hc := math.Abs(*w.serverFIN - *w.clientFIN)
		w.halfClose = &hc
	case w.clientFIN != nil:
		w.firstFIN = "client"
	case w.serverFIN != nil:
		w.firstFIN = "server"
	}
	// Resets: the first one on the wire, by a peer or by the proxy on its
	// own (not passing one on).
	firstPeerRST := earliest(cl.RST, sideRST(srv))
	ownClient := own(px.RST, firstPeerRST)
	var ownUp time.Time
	if pu != nil {
		ownUp = own(pu.RST, firstPeerRST)
	}
	hist = append(hist, struct {
		c  byte
		at time.Time
	}{'!', earliest(ownClient, ownUp)})
	type reset struct {
		side, cause string
		at          time.Time
	}
	var resets []reset
	if !cl.RST.IsZero() {
		resets = append(resets, reset{"client", rstCause(cl, px), cl.RST})
	}
	if srv != nil && !srv.RST.IsZero() {
		resets = append(resets, reset{"server", rstCause(srv, pu), srv.RST})
	}
	if at := earliest(ownClient, ownUp); !at.IsZero() {
		resets = append(resets, reset{"proxy", "", at})
	}
	sort.Slice(resets, func(i, j int) bool { return resets[i].at.Before(resets[j].at) })
	if len(resets) > 0 {
		w.rst, w.rstCause = resets[0].side, resets[0].cause
	}
	for _, h := range hist {
		if at := ms(h.at); at != nil {
			w.history = append(w.history, letter{h.c, *at})
		}
	}
	sort.SliceStable(w.history, func(i, j int) bool { return w.history[i].at < w.history[j].at })
	w.relay, w.relayLate = l.relayFaults(srv, pu, tol)
	return w
}

// relayFaults checks the proxy's own conduct on the wire: a peer's FIN or
// reset reaches the other peer, and without a reset the bytes pass
// unchanged. A reset not passed on because the other leg finished closing
// within tol (ms) of it is late, not wrong: the proxy learns of a reset
// when its goroutine wakes, and after both FINs there is nothing left to
// reset.
func (l legs) relayFaults(srv, pu *wirecap.Side, tol float64) (out, late []string) {
	cl, px := l.client.Client, l.client.Server
	if srv == nil {
		return nil, nil
	}
	closed := func(a, b *wirecap.Side, by time.Time) bool { // both FINs or a reset before by
		return !a.FIN.IsZero() && a.FIN.Before(by) && !b.FIN.IsZero() && b.FIN.Before(by) ||
			!a.RST.IsZero() && a.RST.Before(by) || !b.RST.IsZero() && b.RST.Before(by)
	}
	grace := time.Duration(tol * float64(time.Millisecond))
	if at := srv.RST; !at.IsZero() && !closed(cl, px, at) && !px.RST.After(at) {
		msg := "the server's reset was not passed on to the client"
		if closed(cl, px, at.Add(grace)) {
			late = append(late, msg+" before the client's leg closed")
		} else {
			out = append(out, msg)
		}
	}
	if at := cl.RST; !at.IsZero() && !closed(pu, srv, at) && !pu.RST.After(at) {
		msg := "the client's reset was not passed on to the server"
		if closed(pu, srv, at.Add(grace)) {
			late = append(late, msg+" before the server's leg closed")
		} else {
			out = append(out, msg)
		}
	}
	if at := srv.FIN; !at.IsZero() && px.FIN.IsZero() && px.RST.IsZero() && cl.RST.IsZero() {
		out = append(out, "the server's FIN was not passed on to the client")
	}
	if at := cl.FIN; !at.IsZero() && pu.FIN.IsZero() && pu.RST.IsZero() && srv.RST.IsZero() {
		out = append(out, "the client's FIN was not passed on to the server")
	}
	if cl.RST.IsZero() && srv.RST.IsZero() && px.RST.IsZero() && pu.RST.IsZero() {
		if !bytes.Equal(cl.Stream[l.reqLen:], pu.Stream) {
			out = append(out, fmt.Sprintf("the server got %d bytes, not the %d the client sent", len(pu.Stream), int64(len(cl.Stream))-l.reqLen))
		}
		if !bytes.Equal(srv.Stream, px.Stream[l.replyLen:]) {
			out = append(out, fmt.Sprintf("the client got %d bytes, not the %d the server sent", int64(len(px.Stream))-l.replyLen, len(srv.Stream)))
		}
	}
	return out, late
}

func sideRST(s *wirecap.Side) time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.RST
}

// own is the proxy's reset at, unless a peer's reset came first (then it
// passed that one on).
func own(at, peer time.Time) time.Time {
	if at.IsZero() || !peer.IsZero() && !peer.After(at) {
		return time.Time{}
	}
	return at
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// rstCause reads why a peer reset: data_after_close when data reached it
// after its FIN (its kernel answers data for a closed socket with a reset),
// otherwise abort (SO_LINGER 0, or a close with unread data: the wire
// cannot tell these apart).
func rstCause(peer, proxySide *wirecap.Side) string {
	if !peer.FIN.IsZero() && proxySide != nil && proxySide.DataBetween(peer.FIN, peer.RST) {
		return "data_after_close"
	}
	return "abort"
}

func (w wire) historyString() string {
	var b strings.Builder
	for _, l := range w.history {
		b.WriteByte(l.c)
	}
	return b.String()
}

// historyMatches reports whether got lists the same letters as the wire,
// in the wire's order wherever two letters are further apart than tol,
// the close times' tolerance: times that may each be that late may
// order closer letters either way.
func (w wire) historyMatches(got string, tol float64) bool {
	if len(got) != len(w.history) {
		return false
	}
	at := map[byte]float64{}
	for _, l := range w.history {
		at[l.c] = l.at
	}
	for i := range len(got) {
		if _, ok := at[got[i]]; !ok || strings.IndexByte(got[i+1:], got[i]) >= 0 {
			return false
		}
		for j := i + 1; j < len(got); j++ {
			if at[got[i]]-at[got[j]] > tol {
				return false
			}
		}
	}
	return true
}

// expect is what a scenario adds to the wire's story: the proxy's reason
// for a reset of its own, which the wire cannot show.
type expect struct {
	proxyCause string
	// finTolerance, when set, replaces the default for the close times.
	finTolerance float64
	// connectAbove, when set, replaces the default above the wire's
	// SYN→SYN/ACK time.
	connectAbove float64
}

// tol is the tolerance for close times, in ms.
func (x expect) tol() float64 {
	if x.finTolerance > 0 {
		return x.finTolerance
	}
	return finTolerance
}

// check asserts every TCP field of ev against the wire, and the proxy's
// relaying. It returns the wire's story for scenario-specific checks.
func check(t *testing.T, ev *event.Event, l legs, x expect, late *lateTimes) wire {
	t.Helper()
	tol := x.tol()
	w := l.wire(ev, tol)
	tcp := ev.TCP
	if tcp == nil {
		t.Fatalf("event has no tcp object; error %q", ev.Error)
	}
	t.Logf("wire: history %s first_fin %q client_fin %s server_fin %s half_close %s rst %q/%q up %d down %d connect %s",
		w.historyString(), w.firstFIN, fmtMS(w.clientFIN), fmtMS(w.serverFIN), fmtMS(w.halfClose), w.rst, w.rstCause, w.up, w.down, fmtMS(w.connectMS))
	t.Logf("event: history %q first_fin %q client_fin %s server_fin %s half_close %s rst %q/%q up %d down %d connect %s timeout %q",
		tcp.History, tcp.FirstFIN, fmtMS(tcp.ClientFINMS), fmtMS(tcp.ServerFINMS), fmtMS(tcp.HalfCloseMS), tcp.RST, tcp.RSTCause, tcp.BytesUp, tcp.BytesDown, fmtMS(tcp.ConnectMS), tcp.Timeout)
	// As in the history, the order of two FINs within the close times'
	// tolerance of each other is not claimed.
	finsClose := w.clientFIN != nil && w.serverFIN != nil && math.Abs(*w.clientFIN-*w.serverFIN) <= tol
	if tcp.FirstFIN != w.firstFIN && !finsClose {
		t.Errorf("first_fin = %q, wire %q", tcp.FirstFIN, w.firstFIN)
	}
	late.within(t, "client_fin_ms", tcp.ClientFINMS, w.clientFIN, tol, tol)
	late.within(t, "server_fin_ms", tcp.ServerFINMS, w.serverFIN, tol, tol)
	late.within(t, "half_close_ms", tcp.HalfCloseMS, w.halfClose, tol, tol)
	above := connectAbove
	if x.connectAbove > 0 {
		above = x.connectAbove
	}
	late.within(t, "connect_ms", tcp.ConnectMS, w.connectMS, connectBelow, above)
	wantCause := w.rstCause
	if w.rst == "proxy" {
		wantCause = x.proxyCause
	}
	if tcp.RST != w.rst || tcp.RSTCause != wantCause {
		t.Errorf("rst = %q, rst_cause = %q; wire %q, %q", tcp.RST, tcp.RSTCause, w.rst, wantCause)
	}
	// A reset discards what the proxy had queued toward a peer: the event
	// counts what had left when the proxy read the kernel's counters, just
	// before the reset; on loopback a few segments may still leave in the
	// microseconds between (at most one send window, 64 KiB here).
	slack := int64(0)
	if w.rst != "" {
		slack = 64 << 10
	}
	if d := w.up - tcp.BytesUp; tcp.BytesUp != w.up && (d < 0 || d > slack) || tcp.BytesDown != w.down && (w.down-tcp.BytesDown < 0 || w.down-tcp.BytesDown > slack) {
		t.Errorf("bytes_up = %d, bytes_down = %d; wire %d, %d (a reset allows the event %d bytes less)", tcp.BytesUp, tcp.BytesDown, w.up, w.down, slack)
	}
	if !w.historyMatches(tcp.History, tol) {
		t.Errorf("history = %q, wire %q", tcp.History, w.historyString())
	}
	for _, f := range w.relay {
		t.Errorf("relay: %s", f)
	}
	late.msgs = append(late.msgs, w.relayLate...)
	return w
}

func fmtMS(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *v)
}

// lateTimes collects the times of one run of a scenario that are off the
// wire by more than their tolerance.
type lateTimes struct{ msgs []string }

// within checks an event time against the wire: both absent, or got within
// [want-below, want+above]. It records the deviation. A time present on
// one side only is an error at once; one out of tolerance is collected.
func (l *lateTimes) within(t *testing.T, field string, got, want *float64, below, above float64) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case want == nil:
		t.Errorf("%s = %.3f, but the wire has none", field, *got)
	case got == nil:
		t.Errorf("%s missing; wire %.3f", field, *want)
	default:
		d := *got - *want
		recordDeviation(field, d)
		if d < -below || d > above {
			l.msgs = append(l.msgs, fmt.Sprintf("%s = %.3f, wire %.3f (%+.3f ms, allowed %+.3f..%+.3f)", field, *got, *want, d, -below, above))
		}
	}
}

// attempts runs a scenario up to five times while only its times are off
// the wire. The times are when the proxy's goroutines ran; with the test
// packages running in parallel on two CPUs one of them sometimes wakes
// late, and such bursts of load last seconds (Chromium starting, a
// package's race build). Anything else that is wrong fails at once; times
// still off after five runs fail, and each late run is logged.
func attempts(t *testing.T, run func(t *testing.T, late *lateTimes)) {
	t.Helper()
	for i := 1; ; i++ {
		late := &lateTimes{}
		run(t, late)
		if t.Failed() || len(late.msgs) == 0 {
			return
		}
		if i == 5 {
			for _, m := range late.msgs {
				t.Error(m)
			}
			return
		}
		t.Logf("run %d: times off the wire (%s); running the scenario again", i, strings.Join(late.msgs, "; "))
		time.Sleep(time.Duration(i) * 250 * time.Millisecond)
	}
}

var deviations = struct {
	sync.Mutex
	by map[string][]float64
}{by: map[string][]float64{}}

func recordDeviation(field string, d float64) {
	deviations.Lock()
	deviations.by[field] = append(deviations.by[field], d)
	deviations.Unlock()
}

// printDeviations prints, per field, the median and largest deviation of
// the event from the wire (README.md, "How exact is the record").
func printDeviations() {
	deviations.Lock()
	defer deviations.Unlock()
	fields := make([]string, 0, len(deviations.by))
	for f := range deviations.by {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, f := range fields {
		d := deviations.by[f]
		abs := make([]float64, len(d))
		for i, v := range d {
			abs[i] = math.Abs(v)
		}
		slices.Sort(abs)
		fmt.Fprintf(w, "deviation %-28s n=%-3d median |d| %.3f ms  max |d| %.3f ms\n", f, len(d), abs[len(abs)/2], abs[len(abs)-1])
	}
}

// readAll reads until EOF or error and returns the count.
func readAll(c net.Conn) (int64, error) {
	return io.Copy(io.Discard, c)
}
