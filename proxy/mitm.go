package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// MITM issues the certificates the proxy shows clients when it decrypts.
type MITM interface {
	TLSConfig(host string) *tls.Config
}

// setupMITM makes goproxy decrypt the CONNECTs ServeHTTP hands it. The
// CONNECT's clientConn rides in ctx.UserData, which goproxy copies to each
// decrypted request's ctx.
func (s *Server) setupMITM(gp *goproxy.ProxyHttpServer, m MITM) {
	gp.OnRequest().HandleConnectFunc(func(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
		ctx.UserData = clientConnFrom(ctx.Req)
		return &goproxy.ConnectAction{
			Action: goproxy.ConnectMitm,
			TLSConfig: func(host string, _ *goproxy.ProxyCtx) (*tls.Config, error) {
				return m.TLSConfig(host), nil
			},
		}, host
	})
}

// serveMITM hands a CONNECT to goproxy's MITM, watching the client's
// ClientHello as it passes.
func (s *Server) serveMITM(cc *clientConn, w http.ResponseWriter, r *http.Request) {
	cc.setKind(event.KindMITM, r.Host)
	s.gp.ServeHTTP(&hijackWatcher{ResponseWriter: w, s: s, cc: cc, hello: true}, r)
}

// hijackWatcher wraps the response writer goproxy gets, so that when
// goproxy hijacks the connection (MITM, WebSocket upgrades) the proxy still
// sees the moment it closes, which goproxy does not report, and, for MITM,
// the client's ClientHello.
type hijackWatcher struct {
	http.ResponseWriter
	s     *Server
	cc    *clientConn
	hello bool
	conn  *watchedConn // once hijacked
}

var _ http.Hijacker = (*hijackWatcher)(nil)

func (hw *hijackWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(hw.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	wc := &watchedConn{Conn: c, cc: hw.cc}
	if hw.hello {
		wc.tracker = tlsinfo.NewTracker(hw.s.cfg.Limits.InspectBuffer)
	}
	wc.uncut = hw.s.onCut(wc, func() { _ = c.Close() })
	hw.conn = wc
	return wc, rw, nil
}

// watchedConn is a client connection goproxy hijacked: reads feed the
// ClientHello tracker (MITM), Close writes the event.
type watchedConn struct {
	net.Conn
	cc      *clientConn
	tracker *tlsinfo.Tracker // nil once the ClientHello is read, or for upgrades
	once    sync.Once
	uncut   func()
}

func (wc *watchedConn) Read(p []byte) (int, error) {
	n, err := wc.Conn.Read(p)
	if n > 0 && wc.tracker != nil {
		if !wc.tracker.Feed(tlsinfo.ClientToServer, p[:n], wc.cc.since()) || wc.tracker.Info().ClientHello != nil {
			wc.keepHello()
		}
	}
	return n, err
}

// keepHello stores what the tracker saw and stops feeding it.
func (wc *watchedConn) keepHello() {
	info := wc.tracker.Info()
	wc.tracker = nil
	ch := info.ClientHello
	if ch == nil {
		return
	}
	wc.cc.mu.Lock()
	defer wc.cc.mu.Unlock()
	wc.cc.clientHello = &event.TLS{
		SNI: ch.SNI, ClientHello: ch, JA3: info.JA3, JA3Hash: info.JA3Hash, JA4: info.JA4,
		ClientHelloMS: timing.MSPtr(info.ClientHelloAt),
	}
}

func (wc *watchedConn) Close() error {
	err := wc.Conn.Close()
	wc.once.Do(func() {
		wc.uncut()
		wc.cc.closed()
	})
	return err
}

// dialTLSUpstream is the MITM upstream leg: a timed TCP dial, then a
// verified, timed TLS handshake whose every detail goes in the event.
func (cc *clientConn) dialTLSUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := cc.dialUpstream(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	u := nc.(*upstreamConn)
	host, _, _ := net.SplitHostPort(addr)
	insecure := cc.s.cfg.MITM.InsecureUpstream
	var verr error
	cfg := &tls.Config{
		ServerName: host,
		NextProtos: []string{"http/1.1"},
		// Shared by every client connection's transport, so the upstream
		// leg resumes sessions as one browser would.
		ClientSessionCache: cc.s.sessions,
		// Verification is done in VerifyConnection with tlsinfo.Verify, so
		// the event gets the chain and a classified reason even on failure.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection: func(st tls.ConnectionState) error {
			verr = tlsinfo.Verify(st.PeerCertificates, host, cc.s.inspect.roots, time.Now())
			if verr != nil && !insecure {
				return verr
			}
			return nil
		},
	}
	tc := tls.Client(u, cfg)
	start := cc.since()
	herr := tc.HandshakeContext(ctx)
	end := cc.since()
	t := tlsinfo.StateEvent(tc.ConnectionState())
	t.SNI, t.ChainSource = host, event.ChainMITM
	if t.Chain != nil {
		tlsinfo.SetVerdict(t, verr)
	}
	t.ClientHelloMS, t.HandshakeDone, t.HandshakeMS = timing.MSPtr(start), timing.MSPtr(end), timing.MSPtr(end-start)
	cc.mu.Lock()
	u.tls, u.tlsTime = t, end-start
	if herr != nil {
		u.err = herr.Error()
	}
	cc.mu.Unlock()
	if herr != nil {
		_ = u.Close()
		return nil, fmt.Errorf("proxy: upstream TLS to %s: %w", addr, herr)
	}
	return tc, nil
}
