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
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/splice"
	"github.com/inspectproxy/inspectproxy/socks5"
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

	policy   *access.Policy
	socks    net.Listener
	socksSrc *socksSource

	idPrefix string
	nextID   atomic.Uint64
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
	// Self lists the addresses of this process's other listeners (admin,
	// console, WireGuard), which no stream may target (a loop).
	Self []net.Addr
	// SOCKS, optional, is a bound SOCKS5 listener served with the proxy.
	SOCKS net.Listener
	// Resolver, optional, resolves upstream names (default: the system's).
	Resolver *net.Resolver
	// Setup, optional, serves the phone setup page (http://inspectproxy.setup/,
	// or a plain GET sent straight to the listener), to admitted clients.
	Setup http.Handler
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
	pol, err := access.New(cfg.Access)
	if err != nil {
		return nil, err
	}
	for _, a := range o.Self {
		pol.AddSelf(a)
	}
	pipes := &splice.Pool{}
	s := &Server{
		cfg:      cfg,
		log:      o.Log,
		conns:    newConnTracker(connectionCap(cfg.Limits.MaxConnections, pipes, o.Log)),
		policy:   pol,
		idPrefix: randomHex(3),
		socks:    o.SOCKS,
	}
	dialer := &timing.Dialer{Timeout: cfg.Limits.DialTimeout, Resolver: o.Resolver}
	out := &emitter{recorded: cfg.CaptureScope().Recorded, checker: o.Checker, observers: o.Observers, live: o.Live, sink: o.Sink}
	engine := newHTTPEngine(o.Log)
	s.pipe = &pipeline{
		log: o.Log, lim: cfg.Limits, dialer: dialer, policy: pol, inspect: insp, conns: s.conns, pipes: pipes, out: out, newID: s.newID,
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
	s.socksSrc = &socksSource{
		log: o.Log, lim: cfg.Limits, auth: socks5.Config{Username: cfg.Access.Username, Password: cfg.Access.Password},
		policy: pol, pipe: s.pipe, conns: s.conns,
	}
	s.http = &httpSource{
		log: o.Log, lim: cfg.Limits, access: cfg.Access, policy: pol,
		pipe: s.pipe, engine: engine, conns: s.conns, secrets: cfg.MITM.RecordSecrets, setup: o.Setup,
	}
	return s, nil
}

// ServeStream serves a client stream from a source outside the HTTP
// listener (SOCKS5, WireGuard) and writes its event.
func (s *Server) ServeStream(st *stream.Stream) { s.pipe.Serve(st) }

// Emit writes an event the proxy did not make itself (a WireGuard peer's
// DNS lookup or UDP flow) the way it writes its own: capture scope,
// observers (metrics, trace export, the live console), the sink, the log.
func (s *Server) Emit(ev *event.Event) {
	out := s.pipe.out
	if !out.recorded(ev.Target) {
		return
	}
	out.opened(ev.Kind)
	out.emit(ev, s.log.WithLazy(zap.String("id", ev.ID), zap.String("client", ev.Client), zap.String("target", ev.Target)))
}

// OpenStreams calls fn with a snapshot of every stream open now and the
// last phase it reached, for a live console that starts watching late.
func (s *Server) OpenStreams(fn func(phase string, ev *event.Event)) {
	out := s.pipe.out
	out.openMu.Lock()
	recs := make([]*record, 0, len(out.open))
	for r := range out.open {
		recs = append(recs, r)
	}
	out.openMu.Unlock()
	for _, r := range recs {
		r.mu.Lock()
		phase := r.phase
		r.mu.Unlock()
		if ev, ok := r.snapshot(); ok {
			fn(phase, ev)
		}
	}
}

// AddSelf registers another listener of this process (opened later) that
// no stream may target; the returned func unregisters it.
func (s *Server) AddSelf(addr net.Addr) (remove func()) { return s.policy.AddSelf(addr) }

// fdsPerConn is what one tunnel holds: its two sockets. Splice pipes are
// lent only while bytes flow, from a pool bounded on its own.
const fdsPerConn = 2

// connectionCap lowers max_connections to what the file descriptor limit
// allows, so that a client over it gets a clear 503 rather than a 502 for
// "too many open files" on the upstream dial.
func connectionCap(want int, pipes *splice.Pool, log *zap.Logger) int {
	limit, ok := openFileLimit()
	if !ok {
		return want
	}
	// Listeners, the events file, probes, DNS; and the pipe pool.
	reserve := 64 + pipes.MaxFDs()
	if afford := (int64(limit) - int64(reserve)) / fdsPerConn; afford < int64(want) {
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
	ln, err := Listen(ctx, s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln, ready)
}

// Listen opens a TCP listener for the proxy: without TCP keep-alive on the
// connections it accepts (Go's listeners turn it on, a few setsockopt calls
// per connection): limits.idle_timeout already ends a dead stream, and a
// relay should send nothing its client did not.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	return (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", addr)
}

// Serve is Run on an existing listener, which Serve closes.
func (s *Server) Serve(ctx context.Context, ln net.Listener, ready func(addr net.Addr)) error {
	if err := access.CheckBound(&s.cfg, "listen", ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	s.AddSelf(ln.Addr())
	socksDone := make(chan error, 1)
	if s.socks != nil {
		if err := access.CheckBound(&s.cfg, "socks.listen", s.socks.Addr()); err != nil {
			ln.Close()
			s.socks.Close()
			return err
		}
		s.AddSelf(s.socks.Addr())
		go func() { socksDone <- s.socksSrc.serve(s.socks) }()
		s.log.Info("SOCKS5 listening", zap.Stringer("addr", s.socks.Addr()))
	}
	hs := s.http.server()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(&trackListener{Listener: ln, src: s.http}) }()
	s.log.Info("listening", zap.Stringer("addr", ln.Addr()), zap.String("events", s.cfg.Events.Path))
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-errc:
		if s.socks != nil {
			s.socks.Close()
		}
		return fmt.Errorf("proxy: serve: %w", err)
	case <-ctx.Done():
	}
	if s.socks != nil {
		// No SOCKS stream is admitted once its accept loop has returned.
		s.socks.Close()
		<-socksDone
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
