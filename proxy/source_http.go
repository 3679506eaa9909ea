package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/onboard"
	"github.com/inspectproxy/inspectproxy/stream"
)

// httpSource is the HTTP proxy listener: a CONNECT becomes a stream of the
// pipeline; an absolute-form request goes to the HTTP engine within its
// client connection's session.
type httpSource struct {
	log     *zap.Logger
	lim     config.Limits
	access  config.Access
	policy  *access.Policy
	pipe    *pipeline
	engine  *httpEngine
	conns   *connTracker
	secrets bool
	setup   http.Handler
}

func (s *httpSource) server() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.lim.HeaderTimeout,
		MaxHeaderBytes:    s.lim.MaxHeaderBytes,
		IdleTimeout:       s.lim.IdleTimeout,
		// OPTIONS * goes through the handler (and proxy auth) too.
		DisableGeneralOptionsHandler: true,
		// Every request of a connection carries its session from here.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ctx = context.WithValue(ctx, clientConnKey{}, c)
			if cc, ok := c.(*clientConn); ok {
				ctx = withSession(ctx, cc.sess)
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if cc, ok := c.(*clientConn); ok && st == http.StateClosed {
				cc.finish()
			}
			// A hijacked connection belongs to its tunnel or upgrade, which
			// finishes it.
		},
		ErrorLog: zap.NewStdLog(s.log.Named("http")),
	}
}

// trackListener admits each accepted connection: counted before anything
// else runs for it, given a slot or refused with a 503 and an event.
type trackListener struct {
	net.Listener
	src *httpSource
}

func (l *trackListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok { // the proxy relays TCP only; a listener of another kind is a misuse
			_ = c.Close()
			return nil, fmt.Errorf("proxy: listener gave a %T, not a TCP connection", c)
		}
		slot := l.src.conns.admit()
		cc := l.src.newClientConn(tc, slot)
		if !slot || l.src.conns.inShutdown() {
			go cc.overflow()
			continue
		}
		return cc, nil
	}
}

type clientConnKey struct{}

func clientConnFrom(r *http.Request) *clientConn {
	cc, _ := r.Context().Value(clientConnKey{}).(*clientConn)
	return cc
}

// clientConn is one connection to the HTTP listener: its record, its HTTP
// session, and enough of what crossed it to say what happened to a
// connection that never made a request (a 400, a 431, a header timeout).
type clientConn struct {
	*net.TCPConn
	src     *httpSource
	rec     *record
	sess    *session
	slot    bool
	handled atomic.Bool // a request reached the handler

	mu      sync.Mutex
	head    []byte // the first bytes read
	readErr error  // the first read error
	wrote   []byte // the first bytes written (by net/http, when it refuses)
	once    sync.Once
}

// headCap bounds what is kept of a connection's first bytes each way.
const headCap = 512

func (s *httpSource) newClientConn(c *net.TCPConn, slot bool) *clientConn {
	cc := &clientConn{TCPConn: c, src: s, slot: slot}
	cc.rec = newRecord(s.pipe.newID(), time.Now(), c.RemoteAddr().String(), event.SourceHTTP, s.log, s.pipe.out, s.pipe.bounds)
	cc.rec.release = func() { s.conns.free(slot) }
	cc.sess = &session{rec: cc.rec, lim: s.lim, secrets: s.secrets}
	cc.sess.dial = plainDial(cc.sess, s.pipe.dialerFor(addrPort(c.RemoteAddr())))
	return cc
}

func (cc *clientConn) Read(p []byte) (int, error) {
	n, err := cc.TCPConn.Read(p)
	if !cc.handled.Load() {
		cc.mu.Lock()
		if len(cc.head) < headCap {
			cc.head = append(cc.head, p[:min(n, headCap-len(cc.head))]...)
		}
		if err != nil && cc.readErr == nil {
			cc.readErr = err
		}
		cc.mu.Unlock()
	}
	return n, err
}

func (cc *clientConn) Write(p []byte) (int, error) {
	if !cc.handled.Load() {
		cc.mu.Lock()
		if len(cc.wrote) < headCap {
			cc.wrote = append(cc.wrote, p[:min(len(p), headCap-len(cc.wrote))]...)
		}
		cc.mu.Unlock()
	}
	return cc.TCPConn.Write(p)
}

// finish writes the event of a connection that carried plain HTTP (or
// none): its upstream connections are closed first.
func (cc *clientConn) finish() {
	cc.once.Do(func() {
		ups := cc.sess.close()
		cc.rec.finish(func(ev *event.Event) {
			ev.Upstreams = append(ev.Upstreams, ups...)
			if len(ev.Upstreams) > 0 {
				ev.TCP = &ev.Upstreams[0].TCP
			}
			if !cc.handled.Load() {
				cc.describeUnserved(ev)
			}
		})
		cc.src.conns.done()
	})
}

// overflow refuses a connection over limits.max_connections (or one
// accepted as shutdown began), with an event.
func (cc *clientConn) overflow() {
	msg := cc.src.conns.refusal(cc.slot)
	cc.rec.setLimit("limits.max_connections", msg)
	cc.handled.Store(true)
	_ = reply(cc.TCPConn, "HTTP/1.1", http.StatusServiceUnavailable, msg, cc.src.lim.HeaderTimeout)
	_ = cc.TCPConn.Close()
	cc.finish()
}

// describeUnserved says why a connection ended without a request reaching
// the proxy, from what net/http answered and what the client sent.
func (cc *clientConn) describeUnserved(ev *event.Event) {
	cc.mu.Lock()
	head, wrote, rerr := cc.head, cc.wrote, cc.readErr
	cc.mu.Unlock()
	if ev.Target == "" {
		ev.Target = requestTarget(head)
	}
	if ev.Error != "" {
		return
	}
	lim := cc.src.lim
	switch {
	case bytes.HasPrefix(wrote, []byte("HTTP/1.1 431")):
		ev.Error = fmt.Sprintf("request headers larger than limits.max_header_bytes (%d bytes): answered 431", lim.MaxHeaderBytes)
		ev.Limit = "limits.max_header_bytes"
	case bytes.HasPrefix(wrote, []byte("HTTP/1.1 400")):
		why := "malformed request"
		if i := bytes.Index(wrote, []byte("\r\n\r\n")); i >= 0 {
			why = strings.TrimSpace(string(wrote[i+4:]))
		}
		ev.Error = fmt.Sprintf("%s: answered 400; the request began %q", why, firstLine(head))
	case errors.Is(rerr, os.ErrDeadlineExceeded) && len(head) > 0:
		ev.Error = fmt.Sprintf("request headers not complete within limits.header_timeout (%s); the request began %q", lim.HeaderTimeout, firstLine(head))
		ev.Limit = "limits.header_timeout"
	case errors.Is(rerr, os.ErrDeadlineExceeded):
		ev.Error = fmt.Sprintf("no request within limits.header_timeout (%s)", lim.HeaderTimeout)
		ev.Limit = "limits.header_timeout"
	case len(head) == 0:
		ev.Error = "the client closed the connection without sending a request"
	default:
		ev.Error = fmt.Sprintf("the client closed the connection inside its request headers, which began %q", firstLine(head))
	}
}

// firstLine is a request's first line, for evidence.
func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	return string(b[:min(len(b), 120)])
}

// requestTarget reads the host:port a request asked for from its first
// bytes: a CONNECT authority, an absolute URL's host, or the Host header.
func requestTarget(head []byte) string {
	fields := strings.Fields(firstLine(head))
	if len(fields) < 2 {
		return ""
	}
	if fields[0] == http.MethodConnect {
		return fields[1]
	}
	if rest, ok := strings.CutPrefix(fields[1], "http://"); ok {
		host, _, _ := strings.Cut(rest, "/")
		return withPort(host, "80")
	}
	for _, line := range strings.Split(string(head), "\r\n")[1:] {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "host") {
			return withPort(strings.TrimSpace(v), "80")
		}
	}
	return ""
}

func withPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil || host == "" {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// ServeHTTP dispatches: access control first, then CONNECT to the
// pipeline, and plain HTTP to the engine.
func (s *httpSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cc := clientConnFrom(r)
	if cc == nil { // not from our listener (tests using the handler directly)
		http.Error(w, "inspectproxy: no connection state", http.StatusInternalServerError)
		return
	}
	cc.handled.Store(true)
	optionsStar := r.Method == http.MethodOptions && r.RequestURI == "*"
	setup := s.setup != nil && !optionsStar && onboard.IsSetup(r)
	if code, msg := s.admit(r, setup); code != 0 {
		cc.refuse(w, r, code, msg)
		return
	}
	switch {
	case setup:
		cc.rec.setKind(event.KindHTTP, onboard.Host+":80")
		s.setup.ServeHTTP(w, r)
	case r.Method == http.MethodConnect && s.setup != nil && sameHost(onboard.Host, r.Host):
		cc.refuse(w, r, http.StatusBadRequest, "the setup page is plain HTTP: open http://"+onboard.Host+"/")
	case r.Method == http.MethodConnect:
		s.connect(cc, w, r)
	case optionsStar:
		w.Header().Set("Allow", "OPTIONS, GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT")
		cc.rec.setKind(event.KindHTTP, r.Host)
		w.WriteHeader(http.StatusOK)
	case !r.URL.IsAbs():
		cc.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("inspectproxy is a proxy: request an absolute URL (got %q), or set it as your HTTP proxy", r.RequestURI))
	default:
		cc.rec.setKind(event.KindHTTP, r.Host)
		hw := &hijackWatcher{ResponseWriter: w, cc: cc}
		s.engine.gp.ServeHTTP(hw, r)
		if hw.hijacked {
			// goproxy relayed an upgraded (WebSocket) stream and returns
			// without closing the connection.
			hw.undo()
			_ = cc.TCPConn.Close()
			cc.finish()
		}
	}
}

// admit applies the client allow-list and proxy auth. It returns 0 to go
// on, or a status and the reason. (Destinations are checked after DNS.)
// A setup page asked for straight from the listener (a phone's browser,
// which sends no proxy credentials) is behind the same credentials as
// origin auth: 401, so the browser asks for them.
func (s *httpSource) admit(r *http.Request, setup bool) (int, string) {
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	if err := s.policy.Client(ap); err != nil {
		return http.StatusForbidden, err.Error()
	}
	if s.access.Username == "" || s.access.Password == "" {
		return 0, ""
	}
	if setup && !r.URL.IsAbs() {
		if !checkBasic(r.Header.Get("Authorization"), s.access.Username, s.access.Password) {
			return http.StatusUnauthorized, "the setup page needs the proxy's credentials"
		}
		return 0, ""
	}
	if !checkBasic(r.Header.Get("Proxy-Authorization"), s.access.Username, s.access.Password) {
		return http.StatusProxyAuthRequired, "proxy authentication required"
	}
	return 0, ""
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// checkBasic checks Basic credentials in constant time.
func checkBasic(h, user, pass string) bool {
	const prefix = "Basic "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(h[len(prefix):])
	if err != nil {
		return false
	}
	u, p, ok := strings.Cut(string(raw), ":")
	return ok && subtle.ConstantTimeCompare([]byte(u), []byte(user)) == 1 &&
		subtle.ConstantTimeCompare([]byte(p), []byte(pass)) == 1
}

// refuse answers a request the proxy will not serve and closes the
// connection after it; the event keeps the reason.
func (cc *clientConn) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	kind := event.KindHTTP
	if r.Method == http.MethodConnect {
		kind = event.KindTunnel
	}
	cc.rec.setKind(kind, r.Host)
	cc.rec.setError(msg)
	cc.rec.log.Info("refused", zap.String("target", r.Host), zap.Int("status", code), zap.String("reason", msg))
	switch code {
	case http.StatusProxyAuthRequired:
		w.Header().Set("Proxy-Authenticate", `Basic realm="inspectproxy"`)
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Basic realm="inspectproxy"`)
	}
	w.Header().Set("Connection", "close")
	http.Error(w, "inspectproxy: "+msg, code)
}

// connect hands a CONNECT to the pipeline as a stream: the client's
// connection is taken from the HTTP server, and answered 200 once the
// upstream is connected (or with the refusal).
func (s *httpSource) connect(cc *clientConn, w http.ResponseWriter, r *http.Request) {
	target, err := access.ParseAuthority(r.Host)
	if err != nil {
		cc.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	cc.rec.setKind(event.KindTunnel, r.Host)
	_, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		cc.rec.setError(fmt.Sprintf("hijack: %v", err))
		http.Error(w, "inspectproxy: cannot tunnel on this connection", http.StatusInternalServerError)
		return
	}
	// Upstream connections of plain requests made earlier on this
	// connection are over; their record stays in the event.
	ups := cc.sess.close()
	cc.rec.update(func(ev *event.Event) { ev.Upstreams = ups })
	// Bytes sent right behind the CONNECT (a ClientHello, from clients that
	// don't wait for the 200) sit in the HTTP server's buffer.
	var early []byte
	if n := rw.Reader.Buffered(); n > 0 {
		early, _ = rw.Reader.Peek(n)
		early = bytes.Clone(early)
	}
	raw := cc.TCPConn
	_ = raw.SetDeadline(time.Time{}) // the header deadline no longer applies
	proto := "HTTP/1.1"
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		proto = "HTTP/1.0"
	}
	st := &stream.Stream{
		Source: event.SourceHTTP,
		Client: addrPort(raw.RemoteAddr()),
		Target: target.String(),
		Start:  cc.rec.start,
		ID:     cc.rec.ev.ID,
		Accept: func(netip.AddrPort) (stream.Conn, []byte, error) {
			if err := reply(raw, proto, http.StatusOK, "", s.lim.HeaderTimeout); err != nil {
				_ = raw.Close()
				return nil, nil, err
			}
			return stream.TCP{TCPConn: raw}, early, nil
		},
		Refuse: func(rf stream.Refusal) {
			_ = reply(raw, proto, refusalStatus(rf.Reason), rf.Err.Error(), s.lim.HeaderTimeout)
			_ = raw.Close()
		},
	}
	// The stream lives on its own goroutine so that the HTTP server's one
	// returns and lets go of its buffers and its deep stack: an idle
	// tunnel then holds only what the relay needs (issue 13: RSS per idle
	// tunnel).
	go func() {
		s.pipe.serve(st, cc.rec)
		s.conns.done()
	}()
}

// reply writes a CONNECT's answer: a bare status line for 200, a short
// text body with the reason otherwise.
func reply(c *net.TCPConn, proto string, code int, body string, timeout time.Duration) error {
	msg := fmt.Sprintf("%s %d %s\r\n", proto, code, http.StatusText(code))
	if body != "" {
		body = "inspectproxy: " + body + "\n"
		msg += fmt.Sprintf("Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	} else {
		msg += "\r\n"
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := io.WriteString(c, msg)
	_ = c.SetWriteDeadline(time.Time{})
	return err
}

// hijackWatcher wraps the response writer goproxy gets, so that when
// goproxy takes the connection over for an upgrade (WebSocket), the proxy
// knows, and shutdown can still cut it.
type hijackWatcher struct {
	http.ResponseWriter
	cc       *clientConn
	hijacked bool
	undo     func()
}

var _ http.Hijacker = (*hijackWatcher)(nil)

func (hw *hijackWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(hw.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	hw.hijacked = true
	hw.undo = hw.cc.src.conns.onCut(hw.cc, func() { _ = hw.cc.TCPConn.Close() })
	return c, rw, nil
}
