package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// httpEngine is the HTTP layer: goproxy carries each request, plain or
// decrypted, through its client connection's session, whose transport
// dials (timed) and records every upstream connection, so reuse and
// closes show in the event.
type httpEngine struct {
	gp *goproxy.ProxyHttpServer
}

func newHTTPEngine(log *zap.Logger) *httpEngine {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = zapPrintf{log.Named("goproxy").Sugar()}
	gp.Tr = nil                  // never used: every request gets its session's RoundTripper
	gp.KeepAcceptEncoding = true // pass Accept-Encoding through untouched
	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		s := sessionFrom(r.Context())
		if s == nil {
			return r, goproxy.NewResponse(r, goproxy.ContentTypeText, http.StatusInternalServerError, "inspectproxy: request without connection state")
		}
		ex, refused := s.startExchange(r)
		if refused != nil {
			return r, refused
		}
		stripConnectionHeaders(r.Header)
		// A client that half-closes after its request (RFC 9112 allows it)
		// makes net/http cancel the request's context; the upstream
		// exchange must not die of it. Shutdown and the limits still end it.
		r = r.WithContext(context.WithoutCancel(r.Context()))
		ctx.RoundTripper = goproxy.RoundTripperFunc(func(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
			return s.roundTrip(req, ex)
		})
		return r, nil
	})
	return &httpEngine{gp: gp}
}

type zapPrintf struct {
	l interface{ Debugf(string, ...any) }
}

func (z zapPrintf) Printf(format string, v ...any) { z.l.Debugf(format, v...) }

type sessionKey struct{}

func withSession(ctx context.Context, s *session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

func sessionFrom(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

// hopHeaders are hop-by-hop (RFC 9110 §7.6.1) besides those Connection
// names; Upgrade is kept for a WebSocket handshake, which goproxy relays.
var hopHeaders = []string{"Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding"}

// stripConnectionHeaders removes the headers a message's Connection field
// names (RFC 9110 §7.6.1: they are for this hop only) and the other
// hop-by-hop fields. Connection itself goproxy removes, unless upgrading.
func stripConnectionHeaders(h http.Header) {
	upgrade := false
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			name = textproto.TrimString(name)
			if strings.EqualFold(name, "upgrade") {
				upgrade = true
				continue
			}
			if name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if !upgrade {
		h.Del("Upgrade")
	}
}

// session is one client connection's HTTP state: its record, its
// transport (upstream connections belong to one client connection), and
// the per-connection bounds.
type session struct {
	rec     *record
	lim     config.Limits
	secrets bool // record cookies and authorization values
	// dial opens an upstream connection (plain HTTP: to the request's
	// host; MITM: to the CONNECT target, TLS included).
	dial func(ctx context.Context, addr string) (net.Conn, error)
	tls  bool // the transport's connections are TLS (MITM)
	h2   bool // the upstream may speak HTTP/2 (MITM, negotiated by ALPN)

	mu        sync.Mutex
	transport *http.Transport
	open      int // upstream connections open now
}

// startExchange records a request, or refuses it when a per-connection
// bound is reached (the response tells the client which).
func (s *session) startExchange(r *http.Request) (*exchange, *http.Response) {
	rec := s.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	ex := &exchange{s: s, i: -1, getConn: -1, gotConn: -1, wrote: -1, firstByte: -1}
	if rec.ev.Limit == "limits.max_upstreams_per_client_life" {
		return nil, refusal(r, http.StatusServiceUnavailable, rec.ev.Error)
	}
	b := rec.bounds
	if len(rec.ev.HTTP) >= b.maxRequests || rec.size >= b.maxBytes {
		rec.cut(func(c *event.Cut) { c.HTTP++ })
		return ex, nil
	}
	u := r.URL.String()
	h := event.HTTP{Method: r.Method, URL: u, StartMS: timing.MS(rec.since())}
	if len(u) > b.maxURL {
		h.URL, h.URLLength = u[:b.maxURL], len(u)
		rec.cut(func(c *event.Cut) { c.URLs++ })
	}
	h.RequestHeaders, h.RequestHeadersSize = s.headers(r.Header, r.Host)
	rec.size += 256 + len(h.URL) + headerBytes(h.RequestHeaders)
	ex.i = len(rec.ev.HTTP)
	rec.ev.HTTP = append(rec.ev.HTTP, h)
	return ex, nil
}

// headers returns what an event keeps of a header block: fields in order,
// secrets redacted, at most limits.max_header_bytes_recorded of them; and
// the block's size as an HTTP/1.1 client would send it. s.rec.mu held:
// a bound reached is counted in the record.
func (s *session) headers(h http.Header, host string) ([]event.Header, int64) {
	var out []event.Header
	var size, kept int64
	add := func(k, v string) {
		size += int64(len(k) + len(v) + 4)
		if kept+int64(len(k)+len(v)) > int64(s.rec.bounds.maxHeaders) {
			s.rec.cut(func(c *event.Cut) { c.Headers++ })
			return
		}
		kept += int64(len(k) + len(v))
		if !s.secrets && isSecretHeader(k) {
			v = "[redacted]"
		}
		out = append(out, event.Header{Name: k, Value: v})
	}
	if host != "" {
		add("Host", host)
	}
	for _, k := range sortedKeys(h) {
		for _, v := range h[k] {
			add(k, v)
		}
	}
	return out, size
}

func headerBytes(hs []event.Header) int {
	n := 0
	for _, h := range hs {
		n += len(h.Name) + len(h.Value) + 16
	}
	return n
}

// isSecretHeader names the fields that carry credentials or sessions.
func isSecretHeader(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie":
		return true
	}
	return false
}

func refusal(r *http.Request, code int, msg string) *http.Response {
	resp := goproxy.NewResponse(r, goproxy.ContentTypeText, code, "inspectproxy: "+msg+"\n")
	resp.Header.Set("Connection", "close")
	resp.Close = true
	return resp
}

// roundTrip sends req upstream on the session's transport and records it;
// a failure becomes a 502 (403 when denied) with the reason, where
// goproxy's MITM loop would close the client without a response.
func (s *session) roundTrip(req *http.Request, ex *exchange) (*http.Response, error) {
	trace := &httptrace.ClientTrace{
		GetConn: func(string) { ex.set(&ex.getConn) },
		GotConn: func(info httptrace.GotConnInfo) {
			ex.mu.Lock()
			defer ex.mu.Unlock()
			ex.gotConn = s.rec.since()
			ex.reused = info.Reused
			conn := info.Conn
			if tc, ok := conn.(*tls.Conn); ok { // MITM's upstream
				conn = tc.NetConn()
			}
			ex.upstream, _ = conn.(*upstreamConn)
		},
		WroteRequest:         func(httptrace.WroteRequestInfo) { ex.set(&ex.wrote) },
		GotFirstResponseByte: func() { ex.set(&ex.firstByte) },
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := s.httpTransport().RoundTrip(req)
	if err != nil {
		code := http.StatusBadGateway
		var le *limitError
		switch {
		case errors.Is(err, timing.ErrDenied):
			code = http.StatusForbidden
		case errors.As(err, &le):
			code = http.StatusServiceUnavailable
		}
		ex.fail(code, err.Error())
		return refusal(req, code, "upstream failed: "+err.Error()), nil
	}
	stripConnectionHeaders(resp.Header)
	ex.gotResponse(resp)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// goproxy needs the body's io.ReadWriter for the upgraded
		// (WebSocket) stream; there is no receive phase to time.
		ex.done()
		return resp, nil
	}
	resp.Body = &timedBody{ReadCloser: resp.Body, ex: ex}
	return resp, nil
}

// httpTransport is the session's own transport, made on first use.
func (s *session) httpTransport() *http.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transport == nil {
		s.transport = &http.Transport{
			Proxy:                 nil, // never chain to $HTTP_PROXY: we are the proxy
			DisableCompression:    true,
			MaxIdleConns:          8,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       s.lim.IdleTimeout,
			ResponseHeaderTimeout: s.lim.IdleTimeout,
			ForceAttemptHTTP2:     s.h2,
		}
		dial := s.dialUpstream
		if s.tls {
			s.transport.DialTLSContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }
		} else {
			s.transport.DialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }
		}
	}
	return s.transport
}

// limitError is a per-connection bound refusing a new upstream connection.
type limitError struct{ key, msg string }

func (e *limitError) Error() string { return e.msg }

// dialUpstream enforces the per-connection upstream bounds, then dials.
func (s *session) dialUpstream(ctx context.Context, addr string) (net.Conn, error) {
	rec := s.rec
	s.mu.Lock()
	if s.open >= s.lim.MaxUpstreamsOpen && s.transport != nil {
		// Idle keep-alive connections make room before a new one is refused.
		s.mu.Unlock()
		s.transport.CloseIdleConnections()
		s.mu.Lock()
	}
	rec.mu.Lock()
	total := len(rec.upstreams)
	rec.mu.Unlock()
	var lerr *limitError
	switch {
	case total >= s.lim.MaxUpstreamsPerClient:
		lerr = &limitError{"limits.max_upstreams_per_client_life", limitMsg("max_upstreams_per_client_life", s.lim.MaxUpstreamsPerClient)}
	case s.open >= s.lim.MaxUpstreamsOpen:
		lerr = &limitError{"limits.max_upstreams_open", limitMsg("max_upstreams_open", s.lim.MaxUpstreamsOpen)}
	default:
		s.open++
	}
	s.mu.Unlock()
	if lerr != nil {
		rec.setLimit(lerr.key, lerr.msg)
		return nil, lerr
	}
	c, err := s.dial(ctx, addr)
	if err != nil {
		s.upstreamClosed()
	}
	return c, err
}

func (s *session) upstreamClosed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
}

// close ends the session: idle upstream connections are closed, and every
// upstream's record is returned.
func (s *session) close() []event.Upstream {
	s.mu.Lock()
	tr := s.transport
	s.mu.Unlock()
	if tr != nil {
		tr.CloseIdleConnections()
	}
	s.rec.mu.Lock()
	ups := append([]*upstreamConn(nil), s.rec.upstreams...)
	s.rec.mu.Unlock()
	var out []event.Upstream
	for _, u := range ups {
		out = append(out, u.finish())
	}
	return out
}

// exchange is one request and response, timed like HAR.
type exchange struct {
	s *session
	i int // index in the record's HTTP, -1 when only counted

	// mu guards the trace times: the transport calls them from its own
	// read and write goroutines.
	mu               sync.Mutex
	getConn, gotConn time.Duration
	wrote, firstByte time.Duration
	upstream         *upstreamConn
	reused           bool
	bytes            atomic.Int64
}

// update edits this exchange's record under the record's lock.
func (ex *exchange) update(f func(h *event.HTTP)) {
	if ex.i < 0 {
		return
	}
	rec := ex.s.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	f(&rec.ev.HTTP[ex.i])
}

func (ex *exchange) fail(status int, msg string) {
	ex.update(func(h *event.HTTP) { h.Error = msg; h.Status = status })
	ex.s.rec.setError(msg)
}

// set stamps one trace time.
func (ex *exchange) set(t *time.Duration) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	*t = ex.s.rec.since()
}

func (ex *exchange) gotResponse(resp *http.Response) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	rec := ex.s.rec
	rec.mu.Lock() // headers may count a cut in the record
	hs, size := ex.s.headers(resp.Header, "")
	rec.size += headerBytes(hs)
	rec.mu.Unlock()
	ex.update(func(h *event.HTTP) {
		h.Status = resp.StatusCode
		h.Proto = resp.Proto
		h.ResponseHeaders, h.ResponseHeadersSize = hs, size
		if resp.Request != nil && resp.Request.ContentLength > 0 {
			h.RequestBodySize = resp.Request.ContentLength
		}
		if ex.upstream != nil {
			h.UpstreamID = ex.upstream.id
		}
		h.Reused = ex.reused
		h.SendMS = timing.MS(max(ex.wrote-ex.gotConn, 0))
		h.WaitMS = timing.MSPtr(ex.firstByte - max(ex.wrote, 0))
		if ex.getConn >= 0 && ex.gotConn >= 0 {
			blocked := ex.gotConn - ex.getConn
			if !ex.reused && ex.upstream != nil {
				// The new connection's dial and TLS handshake are in their
				// own HAR phases (dns, connect, ssl), not in blocked.
				blocked -= ex.upstream.dial.ConnectedAt + ex.upstream.tlsTime
			}
			h.BlockedMS = timing.MSPtr(max(blocked, 0))
		}
	})
	rec.publish(PhaseHTTP)
}

func (ex *exchange) done() {
	end := ex.s.rec.since()
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.update(func(h *event.HTTP) {
		h.Bytes = ex.bytes.Load()
		if ex.firstByte >= 0 {
			h.ReceiveMS = timing.MSPtr(end - ex.firstByte)
		}
	})
}

// timedBody marks the end of the receive phase when goproxy has copied
// the body to the client and closes it.
type timedBody struct {
	io.ReadCloser
	ex   *exchange
	once sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.ex.bytes.Add(int64(n))
	return n, err
}

func (b *timedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.ex.done)
	return err
}

// upstreamConn is an upstream connection of a plain-HTTP or MITM client
// connection. It counts bytes and notes who closed first.
type upstreamConn struct {
	*net.TCPConn
	s      *session
	id     int
	target string
	dial   *timing.Dialed
	dialAt time.Duration
	err    string
	tls    *event.TLS
	// tlsTime is the MITM upstream handshake's length.
	tlsTime time.Duration
	// hello reads the MITM upstream handshake off the wire while it runs,
	// for the times crypto/tls does not give (the ServerHello's).
	hello atomic.Pointer[tlsinfo.Tracker]

	up, down atomic.Int64
	close    timing.Close
	mu       sync.Mutex
	closed   bool
	closedAt time.Duration
}

var _ net.Conn = (*upstreamConn)(nil)

// newUpstream records a dial (failed or not) as the session's next
// upstream connection.
func (s *session) newUpstream(target string, d *timing.Dialed, dialAt time.Duration, err error) *upstreamConn {
	rec := s.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	u := &upstreamConn{s: s, id: len(rec.upstreams) + 1, target: target, dial: d, dialAt: dialAt}
	rec.upstreams = append(rec.upstreams, u)
	u.close.Mark(event.SideClient, timing.HistAccept)
	if err != nil {
		u.err = err.Error()
		u.closed, u.closedAt = true, rec.since()
		return u
	}
	u.close.Mark(event.SideServer, timing.HistSynAck)
	u.TCPConn = d.Conn
	return u
}

// plainDial is the plain-HTTP session's dial: timed, recorded.
func plainDial(s *session, dialer *timing.Dialer) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		at := s.rec.since()
		d, err := dialer.Dial(ctx, addr)
		u := s.newUpstream(addr, d, at, err)
		if err != nil {
			return nil, err
		}
		return u, nil
	}
}

func (u *upstreamConn) Read(p []byte) (int, error) {
	n, err := u.TCPConn.Read(p)
	if n > 0 {
		if u.down.Load() == 0 { // the letter is kept once
			u.close.Mark(event.SideServer, timing.HistData)
		}
		if tr := u.hello.Load(); tr != nil {
			tr.Feed(tlsinfo.ServerToClient, p[:n], u.s.rec.since())
		}
	}
	u.down.Add(int64(n))
	switch {
	case err == io.EOF:
		u.close.FIN(event.SideServer, u.s.rec.since())
	case timing.IsReset(err):
		u.close.RST(event.SideServer, "abort", u.s.rec.since())
	}
	return n, err
}

func (u *upstreamConn) Write(p []byte) (int, error) {
	if tr := u.hello.Load(); tr != nil {
		// Fed after the write, so parsing does not delay the bytes. The
		// handshake's own goroutine is the only writer and reader.
		at := u.s.rec.since()
		defer func() { tr.Feed(tlsinfo.ClientToServer, p, at) }()
	}
	n, err := u.TCPConn.Write(p)
	if n > 0 && u.up.Load() == 0 { // the letter is kept once
		u.close.Mark(event.SideClient, timing.HistData)
	}
	u.up.Add(int64(n))
	if timing.IsReset(err) {
		cause := "abort"
		if u.close.HasFIN(event.SideServer) {
			cause = "data_after_close"
		}
		u.close.RST(event.SideServer, cause, u.s.rec.since())
	}
	return n, err
}

// Close is the proxy ending the connection: its FIN, unless the server's
// came first. The transport often closes a "Connection: close" response's
// connection without reading to the server's FIN, so the kernel is asked
// whether that FIN is already there (its time is then when it was noticed).
func (u *upstreamConn) Close() error {
	at := u.s.rec.since()
	if si, ok := timing.Info(u.TCPConn); ok && si.PeerFIN {
		u.close.FIN(event.SideServer, at)
	}
	u.close.FIN(event.SideProxy, at)
	u.mu.Lock()
	first := !u.closed
	if first {
		u.closed, u.closedAt = true, at
	}
	u.mu.Unlock()
	if first {
		u.s.upstreamClosed()
	}
	return u.TCPConn.Close()
}

// finish returns the connection's record; an open one is closed first.
func (u *upstreamConn) finish() event.Upstream {
	if u.TCPConn != nil {
		u.mu.Lock()
		open := !u.closed
		u.mu.Unlock()
		if open {
			_ = u.Close()
		}
	}
	u.mu.Lock()
	end := u.closedAt
	u.mu.Unlock()
	d := u.dial
	if d == nil {
		d = &timing.Dialed{DNS: -1, Connect: -1}
	}
	tcp := tcpFacts(d, u.dialAt, &u.close, u.up.Load(), u.down.Load(), end)
	return event.Upstream{ID: u.id, Target: u.target, TCP: tcp, TLS: u.tls, Error: u.err}
}

func (u *upstreamConn) String() string { return fmt.Sprintf("upstream %d %s", u.id, u.target) }
