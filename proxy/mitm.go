package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
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

// serveMITM hands a CONNECT to goproxy's MITM. The response writer's
// Hijack is wrapped so the proxy sees the client's ClientHello and the
// moment the connection closes, which goproxy does not report.
func (s *Server) serveMITM(cc *clientConn, w http.ResponseWriter, r *http.Request) {
	cc.setKind(event.KindMITM, r.Host)
	s.gp.ServeHTTP(&mitmWriter{ResponseWriter: w, s: s, cc: cc}, r)
}

type mitmWriter struct {
	http.ResponseWriter
	s  *Server
	cc *clientConn
}

var _ http.Hijacker = (*mitmWriter)(nil)

func (mw *mitmWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(mw.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Time{})
	mc := &mitmClient{Conn: c, cc: mw.cc, tracker: tlsinfo.NewTracker(mw.s.cfg.Limits.InspectBuffer), more: true}
	mc.uncut = mw.s.onCut(mc, func() { _ = c.Close() })
	return mc, rw, nil
}

// mitmClient is a decrypted client connection as goproxy sees it: reads
// feed the ClientHello tracker, Close writes the event.
type mitmClient struct {
	net.Conn
	cc      *clientConn
	tracker *tlsinfo.Tracker
	more    bool // the ClientHello is still being read
	once    sync.Once
	uncut   func()
}

func (mc *mitmClient) Read(p []byte) (int, error) {
	n, err := mc.Conn.Read(p)
	if n > 0 && mc.more {
		mc.more = mc.tracker.Feed(tlsinfo.ClientToServer, p[:n], mc.cc.since()) && mc.tracker.Info().ClientHello == nil
	}
	return n, err
}

func (mc *mitmClient) Close() error {
	err := mc.Conn.Close()
	mc.once.Do(func() {
		mc.uncut()
		info := mc.tracker.Info()
		mc.cc.mu.Lock()
		if ch := info.ClientHello; ch != nil {
			mc.cc.clientHello = &event.TLS{
				SNI: ch.SNI, ClientHello: ch, JA3: info.JA3, JA3Hash: info.JA3Hash, JA4: info.JA4,
				ClientHelloMS: timing.MSPtr(info.ClientHelloAt),
			}
		}
		mc.cc.mu.Unlock()
		mc.cc.closed()
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
	t := &event.TLS{SNI: host, ChainSource: event.ChainMITM}
	cfg := &tls.Config{
		ServerName: host,
		NextProtos: []string{"http/1.1"},
		// Verification is done in VerifyConnection with tlsinfo.Verify, so
		// the event gets the chain and a classified reason even on failure.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection: func(st tls.ConnectionState) error {
			t.Chain = tlsinfo.SummarizeChain(st.PeerCertificates)
			verr := tlsinfo.Verify(st.PeerCertificates, host, cc.s.inspect.roots, time.Now())
			t.Verified = ptr(verr == nil)
			if verr != nil {
				t.VerifyError = verr.Error()
				var ve *tlsinfo.VerifyError
				if errors.As(verr, &ve) {
					t.VerifyErrorKind = ve.Kind
				}
				if !insecure {
					return verr
				}
			}
			return nil
		},
	}
	tc := tls.Client(u, cfg)
	start := cc.since()
	herr := tc.HandshakeContext(ctx)
	end := cc.since()
	t.ClientHelloMS, t.HandshakeDone, t.HandshakeMS = timing.MSPtr(start), timing.MSPtr(end), timing.MSPtr(end-start)
	if herr == nil {
		st := tc.ConnectionState()
		t.Version = tlsinfo.VersionName(st.Version)
		t.Cipher = tlsinfo.CipherSuiteName(st.CipherSuite)
		t.ALPN = st.NegotiatedProtocol
		t.Resumed = st.DidResume
		t.OCSPStapled = ptr(len(st.OCSPResponse) > 0)
		t.SCTs = ptr(len(st.SignedCertificateTimestamps))
	}
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
