// Package proxy is the inspecting forward proxy. Every client stream,
// whatever brought it (an HTTP CONNECT, SOCKS5, a WireGuard flow), goes
// through one pipeline: dial (timed) → read the ClientHello → route by SNI
// and policy → passthrough relay or MITM layer → one event. Plain HTTP
// requests go through goproxy, the HTTP engine, which also carries the
// requests inside decrypted streams.
package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
)

// Server is one running proxy.
type Server struct {
	cfg   config.Config
	log   *zap.Logger
	conns *connTracker
	pipe  *pipeline
	http  *httpSource

	idPrefix string
	nextID   atomic.Uint64

	selfMu sync.RWMutex
	// self are the proxy's own listening addresses, which no stream may
	// target (a loop).
	self []string
}

// Options are the parts of a Server that are not configuration values.
type Options struct {
	Log  *zap.Logger
	Sink Sink
	// Observers are told about every stream opening and closing (metrics,
	// trace export).
	Observers []Observer
	// Live, optional, is told each phase of every open stream (the console).
	Live Live
	// Checker, optional, adds the ATS verdict to each event.
	Checker Checker
	// MITM, optional, decrypts tunnels to the hosts the config names.
	MITM MITM
	// KeyLog, optional, receives the TLS secrets of both legs of every
	// decrypted stream (NSS key log format).
	KeyLog io.Writer
	// Self lists other addresses of this process (the admin listener)
	// that streams may not target.
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
	insp, err := newInspector(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      o.Log,
		conns:    newConnTracker(connectionCap(cfg.Limits.MaxConnections, o.Log)),
		idPrefix: randomHex(3),
		self:     o.Self,
	}
	deny := prefixes(cfg.Access.DenyDestinations)
	dialer := &timing.Dialer{Timeout: cfg.Limits.DialTimeout, Deny: func(ap netip.AddrPort) error {
		if p, ok := matchPrefix(deny, ap.Addr()); ok {
			return fmt.Errorf("in access.deny_destinations %s", p)
		}
		if s.isSelf(ap) {
			return errors.New("that is the proxy itself (a loop)")
		}
		return nil
	}}
	out := &emitter{checker: o.Checker, observers: o.Observers, live: o.Live, sink: o.Sink}
	engine := newHTTPEngine(o.Log)
	s.pipe = &pipeline{
		log: o.Log, lim: cfg.Limits, dialer: dialer, inspect: insp, conns: s.conns, out: out, newID: s.newID,
		bounds: recordBounds{
			maxRequests: cfg.Limits.MaxRecordedRequests, maxURL: cfg.Limits.MaxURLBytes,
			maxBytes: cfg.Limits.MaxEventBytes, maxHeaders: cfg.Limits.MaxHeaderBytesRecorded,
		},
	}
	if o.MITM != nil {
		m := &mitmLayer{
			log: o.Log.Named("mitm"), certs: o.MITM, selects: cfg.MITMFor, roots: insp.roots,
			insecure: cfg.MITM.InsecureUpstream, secrets: cfg.MITM.RecordSecrets,
			sessions: tls.NewLRUClientSessionCache(1024), keylog: o.KeyLog, lim: cfg.Limits,
			dialer: dialer, conns: s.conns, engine: engine,
			trusted: newHostMemory(time.Hour, 4096),
		}
		if cfg.MITM.AutoPassthrough {
			m.auto = newHostMemory(cfg.MITM.AutoPassthroughTTL, 4096)
		}
		s.pipe.mitm = m
	}
	s.http = &httpSource{
		log: o.Log, lim: cfg.Limits, access: cfg.Access, allow: prefixes(cfg.Access.AllowClients),
		pipe: s.pipe, engine: engine, conns: s.conns, dialer: dialer, secrets: cfg.MITM.RecordSecrets,
	}
	return s, nil
}

// ServeStream serves a client stream from a source outside the HTTP
// listener (SOCKS5, WireGuard) and writes its event.
func (s *Server) ServeStream(st *stream.Stream) { s.pipe.Serve(st) }

// AddSelf registers another address of this process (a listener opened
// later) that streams may not target.
func (s *Server) AddSelf(addr string) {
	s.selfMu.Lock()
	defer s.selfMu.Unlock()
	s.self = append(s.self, addr)
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

func (s *Server) newID() string {
	return fmt.Sprintf("%s-%d", s.idPrefix, s.nextID.Add(1))
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
	s.AddSelf(ln.Addr().String())
	hs := s.http.server()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(&trackListener{Listener: ln, src: s.http}) }()
	s.log.Info("listening", zap.Stringer("addr", ln.Addr()), zap.String("events", s.cfg.Events))
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("proxy: serve: %w", err)
	case <-ctx.Done():
	}
	return s.stop(hs, errc)
}

// stop stops accepting, lets open streams finish for the grace period,
// then cuts what is left; every stream still writes its event.
func (s *Server) stop(hs *http.Server, errc chan error) error {
	grace := s.cfg.Limits.ShutdownGrace
	s.log.Info("shutting down", zap.Duration("grace", grace))
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// Shutdown closes the listener and idle connections, then waits for
	// busy ones; the accept loop has returned by the time it does, so the
	// open count below misses no stream.
	herr := hs.Shutdown(sctx)
	serr := <-errc
	allDone := s.conns.beginShutdown()
	select {
	case <-allDone:
	case <-sctx.Done():
	}
	s.conns.cutAll() // cuts tunnels and cancels dials, probes, handshakes
	_ = hs.Close()   // and plain-HTTP connections still busy
	<-allDone
	if serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("proxy: serve: %w", serr)
	}
	if herr != nil && !errors.Is(herr, context.DeadlineExceeded) {
		return fmt.Errorf("proxy: shutdown: %w", herr)
	}
	return nil
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
	s.selfMu.RLock()
	defer s.selfMu.RUnlock()
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
