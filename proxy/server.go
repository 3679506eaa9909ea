// Package proxy is the inspecting forward proxy: plain HTTP through goproxy,
// CONNECT tunnels passed through byte for byte while their TCP and TLS
// layers are timed and parsed, and one event per client connection.
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
)

// Sink receives each finished event. Observers are given the event after
// it is written (metrics).
type Sink interface {
	Write(ev *event.Event) error
}

// Observer is told about connections opening and closing.
type Observer interface {
	ConnOpened(kind string)
	ConnClosed(ev *event.Event)
}

// Server is one running proxy.
type Server struct {
	cfg      config.Config
	log      *zap.Logger
	sink     Sink
	observer Observer
	inspect  *inspector
	dialer   *timing.Dialer
	gp       *goproxy.ProxyHttpServer
	mitm     MITM
	sessions tls.ClientSessionCache // MITM upstream sessions
	allow    []netip.Prefix
	idPrefix string
	nextID   atomic.Uint64
	slots    chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]*clientConn // until closed or hijacked
	// open counts client connections whose event is not written yet;
	// idle, when set, is closed when open drops to zero.
	open int
	idle chan struct{}
	// self are the proxy's own listening addresses, which tunnels may not target.
	self []string
	// cutters end connections that outlive the shutdown grace period; nil
	// once it is over, so later ones are cut at once.
	cutters map[any]func()
}

// Options are the parts of a Server that are not configuration values.
type Options struct {
	Log  *zap.Logger
	Sink Sink
	// Observer is optional.
	Observer Observer
	// Checker, optional, adds the ATS verdict to each event.
	Checker Checker
	// MITM, optional, decrypts tunnels to the hosts the config names.
	MITM MITM
	// Self lists other addresses of this process (the admin listener)
	// that tunnels may not target.
	Self []string
}

// New builds a Server. It does not listen yet.
func New(cfg config.Config, o Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil || o.Sink == nil {
		return nil, errors.New("proxy: Options.Log and Options.Sink are required")
	}
	insp, err := newInspector(cfg, o.Checker)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      o.Log,
		sink:     o.Sink,
		observer: o.Observer,
		inspect:  insp,
		idPrefix: randomHex(3),
		slots:    make(chan struct{}, connectionCap(cfg.Limits.MaxConnections, o.Log)),
		conns:    make(map[net.Conn]*clientConn),
		cutters:  make(map[any]func()),
		sessions: tls.NewLRUClientSessionCache(1024),
		self:     o.Self,
	}
	s.allow = prefixes(cfg.Access.AllowClients)
	deny := prefixes(cfg.Access.DenyDestinations)
	s.dialer = &timing.Dialer{Timeout: cfg.Limits.DialTimeout, Deny: func(ap netip.AddrPort) error {
		if p, ok := matchPrefix(deny, ap.Addr()); ok {
			return fmt.Errorf("in access.deny_destinations %s", p)
		}
		if s.isSelf(ap) {
			return errors.New("that is the proxy itself (a loop)")
		}
		return nil
	}}
	s.gp = s.newGoproxy(o.MITM)
	return s, nil
}

// fdsPerConn is what one tunnel can hold: two sockets and, while both
// directions splice, a pipe pair each.
const fdsPerConn = 6

// connectionCap lowers max_connections to what the file descriptor limit
// allows, so that a client over it gets a clear 503 rather than a 502 for
// "too many open files" on the upstream dial.
func connectionCap(want int, log *zap.Logger) int {
	limit, ok := openFileLimit()
	if !ok {
		return want
	}
	const reserve = 64 // listeners, the events file, probes, DNS
	if afford := (int64(limit) - reserve) / fdsPerConn; afford < int64(want) {
		afford = max(afford, 1)
		log.Warn("limits.max_connections lowered to fit the open-file limit; raise it with ulimit -n",
			zap.Int("max_connections", want), zap.Int64("effective", afford), zap.Uint64("nofile", limit), zap.Int("fds_per_connection", fdsPerConn))
		return int(afford)
	}
	return want
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run listens on the configured address and serves until ctx ends, then
// shuts down gracefully. ready, if not nil, gets the bound address.
func (s *Server) Run(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln, ready)
}

// Serve is Run on an existing listener, which Serve closes.
func (s *Server) Serve(ctx context.Context, ln net.Listener, ready func(addr net.Addr)) error {
	s.self = append(s.self, ln.Addr().String())
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.Limits.HeaderTimeout,
		MaxHeaderBytes:    s.cfg.Limits.MaxHeaderBytes,
		IdleTimeout:       s.cfg.Limits.IdleTimeout,
		ConnContext:       s.connContext,
		ConnState:         s.connState,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	lim := &limitListener{Listener: ln, slots: s.slots, done: make(chan struct{}), overflow: s.overflow}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lim) }()
	s.log.Info("listening", zap.Stringer("addr", ln.Addr()), zap.String("events", s.cfg.Events.Path))
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("proxy: serve: %w", err)
	case <-ctx.Done():
	}
	return s.stop(hs, lim, errc)
}

// stop stops accepting, lets open connections finish for the grace period,
// then cuts what is left; every connection still writes its event.
func (s *Server) stop(hs *http.Server, lim *limitListener, errc chan error) error {
	grace := s.cfg.Limits.ShutdownGrace
	s.log.Info("shutting down", zap.Duration("grace", grace))
	close(lim.done)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	allDone := s.whenIdle()
	herr := hs.Shutdown(sctx) // closes idle connections, waits for busy ones
	select {
	case <-allDone:
	case <-sctx.Done():
	}
	s.cutAll()     // cuts tunnels still open
	_ = hs.Close() // and plain-HTTP connections still busy
	<-allDone
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy: serve: %w", err)
	}
	if herr != nil && !errors.Is(herr, context.DeadlineExceeded) {
		return fmt.Errorf("proxy: shutdown: %w", herr)
	}
	return nil
}

// limitListener caps concurrent client connections. Unlike
// netutil.LimitListener it returns the *net.TCPConn itself, so tunnels keep
// splice(2); the slot is given back when the connection's event is written.
// A connection over the cap is answered 503 at once rather than left
// waiting unseen in the kernel's queue.
type limitListener struct {
	net.Listener
	slots    chan struct{}
	done     chan struct{}
	overflow func(net.Conn)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return c, nil
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		default:
			go l.overflow(c)
		}
	}
}

// overflow refuses a connection over limits.max_connections, with an event.
func (s *Server) overflow(c net.Conn) {
	s.track(1)
	defer s.track(-1)
	cc := s.newClientConn(c)
	msg := fmt.Sprintf("limits.max_connections (%d) reached", cap(s.slots))
	cc.setError(msg)
	_ = c.SetWriteDeadline(time.Now().Add(s.cfg.Limits.HeaderTimeout))
	body := "inspectproxy: " + msg + "\n"
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	_ = c.Close()
	cc.closed()
}

// onCut registers cut to end a long-lived connection when the shutdown
// grace period is over; the returned func unregisters it. One map entry
// instead of a watcher goroutine per tunnel keeps idle tunnels cheap.
func (s *Server) onCut(key any, cut func()) (done func()) {
	s.mu.Lock()
	if s.cutters == nil { // already past the grace period
		s.mu.Unlock()
		cut()
		return func() {}
	}
	s.cutters[key] = cut
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.cutters, key)
	}
}

func (s *Server) cutAll() {
	s.mu.Lock()
	cs := s.cutters
	s.cutters = nil
	s.mu.Unlock()
	for _, cut := range cs {
		cut()
	}
}

// release gives back a connection's slot once its event is written.
func (s *Server) release() {
	<-s.slots
	s.track(-1)
}

// track counts open client connections.
func (s *Server) track(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open += delta
	if s.open == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// whenIdle returns a channel closed once no client connection is open. A
// counter rather than a WaitGroup: connections accepted while shutdown
// begins still count.
func (s *Server) whenIdle() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	if s.open == 0 {
		close(ch)
	} else {
		s.idle = ch
	}
	return ch
}

type ctxKey struct{}

func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	cc := s.newClientConn(c)
	cc.hasSlot = true
	s.mu.Lock()
	s.open++
	s.conns[c] = cc
	s.mu.Unlock()
	return context.WithValue(ctx, ctxKey{}, cc)
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	s.mu.Lock()
	cc := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	if cc == nil {
		return
	}
	if st == http.StateClosed {
		cc.closed()
	}
	// A hijacked connection belongs to its tunnel, which finishes it.
}

func clientConnFrom(r *http.Request) *clientConn {
	cc, _ := r.Context().Value(ctxKey{}).(*clientConn)
	return cc
}

// ServeHTTP dispatches: access control first, then CONNECT to a tunnel (or
// to goproxy's MITM), and plain HTTP to goproxy.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cc := clientConnFrom(r)
	if cc == nil { // not from our listener (tests using the handler directly)
		http.Error(w, "inspectproxy: no connection state", http.StatusInternalServerError)
		return
	}
	if code, msg := s.admit(r); code != 0 {
		cc.refuse(w, r, code, msg)
		return
	}
	if r.Method == http.MethodConnect {
		host, _, _ := net.SplitHostPort(r.Host)
		if s.mitm != nil && s.cfg.MITMFor(host) {
			s.serveMITM(cc, w, r)
			return
		}
		s.serveTunnel(cc, w, r)
		return
	}
	if !r.URL.IsAbs() {
		cc.refuse(w, r, http.StatusBadRequest, fmt.Sprintf("inspectproxy is a proxy: request an absolute URL (got %q), or set it as your HTTP proxy", r.RequestURI))
		return
	}
	cc.setKind(event.KindHTTP, r.Host)
	hw := &hijackWatcher{ResponseWriter: w, s: s, cc: cc}
	s.gp.ServeHTTP(hw, r)
	if hw.conn != nil {
		// goproxy hijacked it for an upgrade (WebSocket) and, once either
		// side has closed, returns without closing it.
		_ = hw.conn.Close()
	}
}

// admit applies the client allow-list and proxy auth. It returns 0 to go
// on, or a status and the reason. (Destinations are checked after DNS.)
func (s *Server) admit(r *http.Request) (int, string) {
	if len(s.allow) > 0 {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if _, ok := matchPrefix(s.allow, ap.Addr().Unmap()); err != nil || !ok {
			return http.StatusForbidden, fmt.Sprintf("client %s is not in access.allow_clients", r.RemoteAddr)
		}
	}
	if s.cfg.AuthEnabled() && !checkProxyAuth(r, s.cfg.Access.Username, s.cfg.Access.Password) {
		return http.StatusProxyAuthRequired, "proxy authentication required"
	}
	return 0, ""
}

// prefixes parses CIDRs or addresses that Validate has already checked.
func prefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range list {
		p, _ := config.ParsePrefix(c)
		out = append(out, p)
	}
	return out
}

// matchPrefix returns the first of ps that holds a.
func matchPrefix(ps []netip.Prefix, a netip.Addr) (netip.Prefix, bool) {
	for _, p := range ps {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// isSelf reports whether ap is one of the proxy's own listeners, checked
// after DNS so that no name for this machine gets around it. A listener on
// an unspecified address is every local address at its port.
func (s *Server) isSelf(ap netip.AddrPort) bool {
	for _, a := range s.self {
		l, err := netip.ParseAddrPort(a)
		if err != nil || l.Port() != ap.Port() {
			continue
		}
		if l.Addr().Unmap() == ap.Addr() || (l.Addr().IsUnspecified() && isLocalAddr(ap.Addr())) {
			return true
		}
	}
	return false
}

func isLocalAddr(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

func (s *Server) newID() string {
	return fmt.Sprintf("%s-%d", s.idPrefix, s.nextID.Add(1))
}

// emit writes a finished event, logs its summary line and tells the observer.
func (s *Server) emit(ev *event.Event, log *zap.Logger) {
	s.inspect.check(ev)
	if s.observer != nil { // first, so metrics never lag the events file
		s.observer.ConnClosed(ev)
	}
	if err := s.sink.Write(ev); err != nil {
		log.Error("event not written", zap.Error(err))
	}
	logSummary(log, ev)
}
