package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// MITM issues the certificates the proxy shows clients when it decrypts.
type MITM interface {
	// Certificate returns a leaf for name, signed by the proxy's CA.
	Certificate(name string) (*tls.Certificate, error)
}

// mitmLayer decrypts a stream the route chose: it completes the TLS
// handshake with the server first (verified, timed, with the ALPN the
// client offered), then with the client, showing a leaf for the SNI and
// the protocol the server chose (h2 or HTTP/1.1), and serves the requests
// inside with the HTTP engine. The client leg's bytes go through the same
// tracker as a passthrough stream's, so hellos, fingerprints, failures
// and a client rejecting the certificate are read the same way.
type mitmLayer struct {
	log      *zap.Logger
	certs    MITM
	selects  func(host string) bool // mitm.enabled / mitm.hosts
	roots    *x509.CertPool
	insecure bool
	secrets  bool
	sessions tls.ClientSessionCache
	keylog   io.Writer
	lim      config.Limits
	dialer   *timing.Dialer
	conns    *connTracker
	engine   *httpEngine
	// auto, when not nil, sends hosts whose clients rejected the proxy's
	// certificate through untouched for a while (mitm.auto_passthrough).
	auto *hostMemory
	// trusted remembers clients that accepted a leaf recently: a client
	// that trusts the CA and still rejects a leaf is likely pinning.
	trusted *hostMemory
}

type routeDecision struct {
	mitm    bool
	skipped string // why a host the policy selects is passed through
}

// route decides, from the ClientHello, whether to decrypt. The name is
// the SNI (the CONNECT host when the client sent none): a leaf is only
// ever issued for the name the client asked for in its handshake.
func (m *mitmLayer) route(target string, h hello) routeDecision {
	host := serverName(h.sni(), target)
	if !m.selects(host) {
		return routeDecision{}
	}
	switch {
	case h.timedOut:
		return routeDecision{skipped: "no ClientHello within limits.hello_timeout"}
	case h.info.NotTLS != "":
		return routeDecision{skipped: "not TLS: " + h.info.NotTLS}
	case h.info.ClientHello == nil:
		why := "no complete ClientHello"
		if h.info.Err != nil {
			why += ": " + h.info.Err.Error()
		} else if h.err != nil {
			why += ": " + h.err.Error()
		}
		return routeDecision{skipped: why}
	case !validLeafName(host):
		return routeDecision{skipped: fmt.Sprintf("SNI %q is not a host name: no certificate is issued for it", host)}
	}
	if m.auto != nil {
		if why, ok := m.auto.get(strings.ToLower(host)); ok {
			return routeDecision{skipped: why}
		}
	}
	return routeDecision{mitm: true}
}

// validLeafName accepts a DNS host name or an IP address: never a
// wildcard, an empty label or a trailing dot.
func validLeafName(name string) bool {
	if _, err := netip.ParseAddr(name); err == nil {
		return true
	}
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// serve decrypts one stream and finishes its record.
func (m *mitmLayer) serve(rec *record, client stream.Conn, h hello, tr *tlsinfo.Tracker, d *timing.Dialed, dialAt time.Duration) {
	target := rec.ev.Target
	name := serverName(h.sni(), target)
	rec.setKind(event.KindMITM, target)
	if h.sni() != "" && !sameHost(h.sni(), target) {
		rec.update(func(ev *event.Event) { ev.SNIMismatch = true })
	}
	s := &session{rec: rec, lim: m.lim, secrets: m.secrets, tls: true}
	var closeOnce sync.Once
	cc := &mitmClientConn{Conn: client, tracker: tr, replay: h.bytes, since: rec.since}
	// Set when the client refused the proxy's leaf: what it likely means,
	// and the alert crypto/tls decrypted (the tracker cannot, in TLS 1.3).
	var likely string
	var alertErr error
	defer func() {
		rec.finish(func(ev *event.Event) {
			ev.Upstreams = s.close()
			if len(ev.Upstreams) > 0 {
				ev.TCP = &ev.Upstreams[0].TCP
			}
			info := tr.Info()
			client := info.Event()
			if cr := clientRejection(client); cr != nil && likely != "" {
				cr.Likely = likely
				if cr.AlertCode == nil && alertErr != nil {
					cr.Alert, cr.AlertCode = alertOf(alertErr)
				}
			}
			ev.TLS = mitmTLS(client, ev.Upstreams)
		})
	}()
	defer closeOnce.Do(func() { _ = client.Close() })
	undo := m.conns.onCut(cc, func() { closeOnce.Do(func() { _ = client.Abort() }) })
	defer undo()

	// The server's leg first: its ALPN decides what the client is offered.
	first := s.newUpstream(target, d, dialAt, nil)
	s.open++
	ctx, cancel := context.WithTimeout(m.conns.base, m.lim.HandshakeTimeout)
	up, uerr := m.handshake(ctx, first, name, alpnOffer(h.info.ClientHello))
	cancel()
	proto := "http/1.1"
	if uerr == nil {
		if p := up.ConnectionState().NegotiatedProtocol; p != "" {
			proto = p
		}
		s.h2 = proto == "h2"
	} else {
		rec.setError(uerr.Error())
	}
	// Later upstream connections go to the address the first one reached.
	addr := d.Remote.String()
	offer := []string{proto}
	var pending atomic.Pointer[tls.Conn]
	pending.Store(up)
	s.dial = func(ctx context.Context, _ string) (net.Conn, error) {
		if c := pending.Swap(nil); c != nil {
			return c, nil
		}
		at := rec.since()
		d, err := m.dialer.Dial(ctx, addr)
		u := s.newUpstream(target, d, at, err)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, m.lim.HandshakeTimeout)
		defer cancel()
		return m.handshake(ctx, u, name, offer)
	}
	if uerr != nil {
		// The client still gets a TLS session and a 502 that says why.
		s.dial = func(context.Context, string) (net.Conn, error) { return nil, uerr }
	}

	cert, err := m.certs.Certificate(name)
	if err != nil {
		rec.setError(fmt.Sprintf("proxy: certificate for %q: %v", name, err))
		return
	}
	srv := tls.Server(cc, &tls.Config{
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{proto},
		MinVersion:   tls.VersionTLS10, // the client's leg is not what ATS judges
		KeyLogWriter: m.keylog,
	})
	ctx, cancel = context.WithTimeout(m.conns.base, m.lim.HandshakeTimeout)
	err = srv.HandshakeContext(ctx)
	cancel()
	clientIP := addrPort(client.RemoteAddr()).Addr().String()
	if err != nil {
		rec.setError(fmt.Sprintf("proxy: TLS handshake with the client for %q: %v", name, err))
		likely = m.rejected(tr, name, clientIP)
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "remote error" {
			alertErr = oe.Err
		}
		return
	}
	m.trusted.put(clientIP, "")
	rec.publish(PhaseHandshakeDone)
	// Requests' contexts derive from ctx (BaseContext, or h2's Context):
	// each carries the session.
	ctx = withSession(m.conns.base, s)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Requests go to the server this stream was connected to, whatever
		// their Host says; the URL records what the client asked for.
		r.URL.Scheme = "https"
		r.URL.Host = r.Host
		if r.URL.Host == "" {
			r.URL.Host = target
		}
		m.engine.gp.ServeHTTP(w, r)
	})
	if srv.ConnectionState().NegotiatedProtocol == "h2" {
		h2 := &http2.Server{IdleTimeout: m.lim.IdleTimeout, MaxConcurrentStreams: 100}
		h2.ServeConn(srv, &http2.ServeConnOpts{
			Context:    ctx,
			Handler:    handler,
			BaseConfig: &http.Server{ReadHeaderTimeout: m.lim.HeaderTimeout, MaxHeaderBytes: m.lim.MaxHeaderBytes},
		})
		return
	}
	serveOne(srv, &http.Server{
		Handler: handler,
		// Waiting for the first request is the stream's idle time too:
		// net/http cannot tell it from reading slow headers.
		ReadHeaderTimeout:            min(m.lim.HeaderTimeout, m.lim.IdleTimeout),
		IdleTimeout:                  m.lim.IdleTimeout,
		MaxHeaderBytes:               m.lim.MaxHeaderBytes,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     zap.NewStdLog(m.log.Named("mitm-http")),
		BaseContext:                  func(net.Listener) context.Context { return ctx },
	})
}

func clientRejection(t *event.TLS) *event.ClientRejected {
	if t == nil {
		return nil
	}
	return t.ClientRejected
}

// rejected reads a failed client handshake from the tracker, which saw
// it on the wire: if the client refused the proxy's leaf, the rejection is
// likely pinning when this client accepted the proxy's leaves before (so
// it trusts the CA), untrusted_ca otherwise; with auto passthrough the
// host is then sent through untouched for a while.
func (m *mitmLayer) rejected(tr *tlsinfo.Tracker, name, clientIP string) (likely string) {
	if tr.Info().Rejection == nil {
		return ""
	}
	likely = tlsinfo.LikelyUntrustedCA
	if _, ok := m.trusted.get(clientIP); ok {
		likely = tlsinfo.LikelyPinning
	}
	if m.auto != nil {
		m.auto.put(strings.ToLower(name), fmt.Sprintf("the client rejected the proxy's certificate for %s at %s (%s; mitm.auto_passthrough)",
			name, time.Now().UTC().Format(time.RFC3339), likely))
	}
	return likely
}

// handshake is the server's leg: a verified, timed TLS handshake on u
// whose every detail goes in u's record.
func (m *mitmLayer) handshake(ctx context.Context, u *upstreamConn, name string, alpn []string) (*tls.Conn, error) {
	var verr error
	cfg := &tls.Config{
		ServerName: name,
		NextProtos: alpn,
		// Shared by every client connection, so the server's leg resumes
		// sessions as one browser would.
		ClientSessionCache: m.sessions,
		KeyLogWriter:       m.keylog,
		// Verification is done in VerifyConnection with tlsinfo.Verify, so
		// the event gets the chain and a classified reason even on failure.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection: func(st tls.ConnectionState) error {
			verr = tlsinfo.Verify(st.PeerCertificates, name, m.roots, time.Now())
			if verr != nil && !m.insecure {
				return verr
			}
			return nil
		},
	}
	tc := tls.Client(u, cfg)
	since := u.s.rec.since
	wire := tlsinfo.NewTracker(0)
	u.hello.Store(wire)
	start := since()
	herr := tc.HandshakeContext(ctx)
	end := since()
	u.hello.Store(nil)
	t := tlsinfo.StateEvent(tc.ConnectionState())
	t.SNI, t.ChainSource = name, event.ChainMITM
	if t.Chain != nil {
		tlsinfo.SetVerdict(t, verr)
	}
	// The times and the ServerHello as they were on the wire: the
	// handshake runs from the ClientHello's write, not from key generation.
	info := wire.Info()
	if info.ClientHelloAt >= 0 {
		start = info.ClientHelloAt
	}
	t.ClientHelloMS, t.HandshakeDone, t.HandshakeMS = timing.MSPtr(start), timing.MSPtr(end), timing.MSPtr(end-start)
	if w := info.Event(); w != nil {
		t.ServerHelloMS, t.ServerHello, t.JA3S, t.JA3SHash = w.ServerHelloMS, w.ServerHello, w.JA3S, w.JA3SHash
	}
	if herr != nil {
		t.HandshakeDone, t.HandshakeMS = nil, nil
		t.Failure = handshakeFailure(event.SideServer, herr, upstreamPhase(tc.ConnectionState()), end)
	}
	u.mu.Lock()
	u.tls, u.tlsTime = t, end-start
	if herr != nil {
		u.err = herr.Error()
	}
	u.mu.Unlock()
	if herr != nil {
		_ = u.Close()
		return nil, fmt.Errorf("proxy: upstream TLS to %s: %w", u.target, herr)
	}
	return tc, nil
}

// handshakeFailure says how a handshake the proxy made ended early, from
// crypto/tls's error: by the peer (by) with an alert, a close or a reset,
// or by the proxy's timeout; the phase is as far as the peer got.
func handshakeFailure(by string, err error, phase string, at time.Duration) *event.HandshakeFailure {
	f := &event.HandshakeFailure{By: by, AtMS: timing.MSPtr(at), Phase: phase}
	var oe *net.OpError
	var ae tls.AlertError
	switch {
	case errors.As(err, &oe) && oe.Op == "remote error":
		f.How = "alert"
		f.Alert, f.AlertCode = alertOf(oe.Err)
	case errors.As(err, &ae):
		f.By, f.How = event.SideProxy, "alert"
		f.Alert, f.AlertCode = alertOf(ae)
	case errors.Is(err, context.DeadlineExceeded):
		f.By, f.How = event.SideProxy, "timeout"
	case timing.IsReset(err):
		f.How = "rst"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		f.How = "close"
	default:
		// The proxy refused what it was sent (a certificate that does not
		// verify, a malformed message).
		f.By, f.How = event.SideProxy, "alert"
	}
	return f
}

// upstreamPhase is how far the server got in a handshake the proxy began.
func upstreamPhase(st tls.ConnectionState) string {
	switch {
	case len(st.PeerCertificates) > 0:
		return "server_flight"
	case st.Version != 0:
		return "server_hello"
	}
	return "client_hello"
}

// alertOf names an alert crypto/tls reported (its text, e.g. "tls:
// handshake failure") with the IANA name and number.
func alertOf(err error) (string, *int) {
	desc := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "tls: "), " ", "_")
	for code := range 256 {
		if name := tlsinfo.AlertName(uint8(code)); strings.EqualFold(name, desc) {
			return fmt.Sprintf("fatal %s (%d)", name, code), &code
		}
	}
	return desc, nil
}

// alpnOffer is what the server's leg offers: the client's own offer, of
// the protocols the HTTP engine speaks.
func alpnOffer(ch *event.ClientHello) []string {
	var out []string
	if ch != nil {
		for _, p := range ch.ALPN {
			if p == "h2" || p == "http/1.1" {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		out = []string{"http/1.1"}
	}
	return out
}

// sameHost reports whether name is the host of a host:port target.
func sameHost(name, target string) bool {
	return strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(hostOnly(target), "."))
}

// mitmTLS is a decrypted connection's tls object: the server's handshake
// as the proxy made it (what ATS judges), with the client's ClientHello,
// fingerprints and handshake story from the client's own leg.
func mitmTLS(client *event.TLS, ups []event.Upstream) *event.TLS {
	var t *event.TLS
	for _, u := range ups {
		if u.TLS != nil {
			c := *u.TLS
			t = &c
			break
		}
	}
	switch {
	case t == nil:
		return client
	case client != nil:
		t.SNI, t.ClientHello, t.JA3, t.JA3Hash, t.JA4 = client.SNI, client.ClientHello, client.JA3, client.JA3Hash, client.JA4
		t.HelloRetry, t.ClientRejected = client.HelloRetry, client.ClientRejected
		if t.Failure == nil {
			t.Failure = client.Failure
		}
	}
	return t
}

// mitmClientConn is the client's side of a decrypted stream: the bytes
// read while routing are replayed to the TLS server first, and every byte
// each way is given to the tracker (the client's hello was already), so
// the client's handshake is read as a passthrough stream's is.
type mitmClientConn struct {
	stream.Conn
	tracker *tlsinfo.Tracker
	replay  []byte
	since   func() time.Duration
}

func (c *mitmClientConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.tracker.Feed(tlsinfo.ClientToServer, p[:n], c.since())
	}
	switch {
	case err == nil:
	case timing.IsReset(err):
		c.tracker.Reset(tlsinfo.ClientToServer, c.since())
	default:
		c.tracker.EOF(tlsinfo.ClientToServer, c.since())
	}
	return n, err
}

func (c *mitmClientConn) Write(p []byte) (int, error) {
	c.tracker.Feed(tlsinfo.ServerToClient, p, c.since())
	return c.Conn.Write(p)
}

// serveOne serves HTTP/1.x on one connection with srv and returns when
// the connection is closed (or hijacked and then closed).
func serveOne(c net.Conn, srv *http.Server) {
	l := &oneConnListener{done: make(chan struct{})}
	l.conn = &closeNotifyConn{Conn: c, done: l.done}
	_ = srv.Serve(l)
}

// oneConnListener hands out one connection, then blocks until it closes.
type oneConnListener struct {
	conn net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// closeNotifyConn closes done when the connection is closed, whoever
// closes it (the HTTP server, or goproxy after a WebSocket upgrade).
type closeNotifyConn struct {
	net.Conn
	done chan struct{}
	once sync.Once
}

func (c *closeNotifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// hostMemory remembers keys for a while (bounded, expiring).
type hostMemory struct {
	ttl time.Duration
	max int
	mu  sync.Mutex
	m   map[string]memoryEntry
}

type memoryEntry struct {
	why     string
	expires time.Time
}

func newHostMemory(ttl time.Duration, max int) *hostMemory {
	return &hostMemory{ttl: ttl, max: max, m: make(map[string]memoryEntry)}
}

func (h *hostMemory) put(key, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.m) >= h.max {
		now := time.Now()
		for k, e := range h.m {
			if now.After(e.expires) {
				delete(h.m, k)
			}
		}
		if len(h.m) >= h.max {
			h.m = make(map[string]memoryEntry) // start afresh rather than grow
		}
	}
	h.m[key] = memoryEntry{why: why, expires: time.Now().Add(h.ttl)}
}

func (h *hostMemory) get(key string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[key]
	if !ok || time.Now().After(e.expires) {
		return "", false
	}
	return e.why, true
}

// sortedKeys returns a header's field names in order.
func sortedKeys(h http.Header) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
