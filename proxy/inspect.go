package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// inspector turns what a tracker saw into the event's tls object: names,
// fingerprints, times, the chain (observed or probed) and its verification.
type inspector struct {
	roots        *x509.CertPool // nil: the system's
	prober       *tlsinfo.Prober
	probeTimeout time.Duration

	// chains caches each chain's summary and verdict: most connections to
	// a host show the same chain, and summarising (a self-signature check
	// per certificate) and verifying it were a quarter of a tunnel's CPU.
	mu     sync.Mutex
	chains map[string]chainEntry
}

type chainEntry struct {
	summary []event.Cert
	err     error
	expires time.Time
}

// chainCacheSize bounds the chain cache; past it, it starts afresh.
const chainCacheSize = 4096

// chain summarises and verifies certs for host, cached per host and chain
// for a minute, and never past a certificate's expiry.
func (in *inspector) chain(certs []*x509.Certificate, host string) ([]event.Cert, error) {
	var key strings.Builder
	key.WriteString(host)
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		key.Write(sum[:])
	}
	now := time.Now()
	in.mu.Lock()
	e, ok := in.chains[key.String()]
	in.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.summary, e.err
	}
	e = chainEntry{
		summary: tlsinfo.SummarizeChain(certs),
		err:     tlsinfo.Verify(certs, host, in.roots, now),
		expires: now.Add(time.Minute),
	}
	for _, c := range certs {
		if c.NotAfter.Before(e.expires) {
			e.expires = c.NotAfter
		}
	}
	in.mu.Lock()
	if len(in.chains) >= chainCacheSize {
		in.chains = make(map[string]chainEntry)
	}
	in.chains[key.String()] = e
	in.mu.Unlock()
	return e.summary, e.err
}

func newInspector(cfg config.Config) (*inspector, error) {
	roots, err := LoadRoots(cfg.TLS.ExtraRoots)
	if err != nil {
		return nil, err
	}
	in := &inspector{roots: roots, probeTimeout: cfg.TLS.ProbeTimeout, chains: make(map[string]chainEntry)}
	if cfg.TLS.Probe {
		in.prober = tlsinfo.NewProber(cfg.TLS.ProbeTimeout, cfg.TLS.ProbeTTL)
	}
	return in, nil
}

// LoadRoots returns the system roots plus the PEM files given, or nil (the
// system's) when none are given.
func LoadRoots(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("proxy: extra root: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("proxy: extra root %s: no PEM certificate in it", f)
		}
	}
	return pool, nil
}

// fillTLS sets ev.TLS (or ev.TLSAbsent) from what the tracker saw.
func (in *inspector) fillTLS(ev *event.Event, info tlsinfo.Info, target string, helloTimedOut bool, log *zap.Logger) {
	if helloTimedOut {
		// Inspection gave up waiting; what came after was not parsed as a hello.
		ev.TLSAbsent = "the client sent nothing within limits.hello_timeout; the tunnel was relayed uninspected"
		return
	}
	if info.NotTLS != "" {
		ev.TLSAbsent = info.NotTLS
		return
	}
	if info.ClientHello == nil {
		switch {
		case info.Err != nil:
			ev.TLSAbsent = "no ClientHello: " + info.Err.Error()
		case ev.TCP != nil && ev.TCP.BytesUp > 0:
			// The stream was cut before the tracker was told it ended.
			ev.TLSAbsent = fmt.Sprintf("no complete ClientHello in the %d bytes the client sent", ev.TCP.BytesUp)
		default:
			ev.TLSAbsent = "the client sent no data"
		}
		return
	}
	ch := info.ClientHello
	t := info.Event()
	ev.TLS = t
	host := serverName(ch.SNI, target)
	certs := info.Certificates
	switch {
	case len(certs) > 0:
		t.ChainSource = event.ChainObserved
		if info.CertificateErr != nil {
			t.ChainError = info.CertificateErr.Error()
		}
	case info.ServerHello == nil:
		t.ChainError = "no ServerHello: the handshake did not complete"
	case in.prober == nil:
		t.ChainError = fmt.Sprintf("chain not on the wire (%s) and tls.probe is off", t.Version)
	default:
		certs = in.probe(ev, t, ch.SNI, target, log)
	}
	if len(certs) == 0 {
		return
	}
	var err error
	t.Chain, err = in.chain(certs, host)
	tlsinfo.SetVerdict(t, err)
}

// probe fetches a chain the handshake did not show (TLS 1.3, or a resumed
// TLS 1.2 session) from the same server address with the same SNI.
func (in *inspector) probe(ev *event.Event, t *event.TLS, sni, target string, log *zap.Logger) []*x509.Certificate {
	addr := target
	if ev.TCP != nil && ev.TCP.RemoteAddr != "" {
		addr = ev.TCP.RemoteAddr
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.probeTimeout)
	defer cancel()
	res, err := in.prober.Probe(ctx, addr, sni)
	if err != nil {
		t.ChainError = "chain not on the wire; probe failed: " + err.Error()
		log.Debug("probe failed", zap.Error(err))
		return nil
	}
	t.ChainSource = event.ChainProbed
	t.OCSPStapled = ptr(res.OCSPStapled)
	t.SCTs = ptr(res.SCTs)
	return res.Certificates
}

func ptr[T any](v T) *T { return &v }

// logSummary is the one log line per connection: the layers in order.
func logSummary(log *zap.Logger, ev *event.Event) {
	level := zap.InfoLevel
	if ev.Error != "" {
		level = zap.WarnLevel
	}
	if !log.Core().Enabled(level) {
		return // building the fields is most of a line's cost
	}
	f := []zap.Field{zap.String("kind", ev.Kind)}
	if tcp := ev.TCP; tcp != nil {
		if tcp.DNSMS != nil {
			f = append(f, zap.Float64("dns_ms", *tcp.DNSMS))
		}
		if tcp.ConnectMS != nil {
			f = append(f, zap.Float64("tcp_connect_ms", *tcp.ConnectMS))
		}
	}
	if t := ev.TLS; t != nil {
		f = append(f, zap.String("tls", t.Version), zap.String("cipher", t.Cipher))
		if t.HandshakeMS != nil {
			f = append(f, zap.Float64("handshake_ms", *t.HandshakeMS))
		}
		if t.ALPN != "" {
			f = append(f, zap.String("alpn", t.ALPN))
		}
		if t.ChainSource != "" {
			f = append(f, zap.String("chain", t.ChainSource))
		}
	} else if ev.TLSAbsent != "" {
		f = append(f, zap.String("no_tls", ev.TLSAbsent))
	}
	if n := len(ev.HTTP); n > 0 {
		f = append(f, zap.Int("requests", n), zap.Int("upstreams", len(ev.Upstreams)))
	}
	if tcp := ev.TCP; tcp != nil {
		f = append(f, zap.String("first_fin", tcp.FirstFIN))
		if tcp.RST != "" {
			f = append(f, zap.String("rst", tcp.RST))
		}
		if tcp.Timeout != "" {
			f = append(f, zap.String("timeout", tcp.Timeout))
		}
		f = append(f, zap.Int64("up", tcp.BytesUp), zap.Int64("down", tcp.BytesDown), zap.Float64("duration_ms", tcp.DurationMS))
	}
	if ev.ATS != nil {
		f = append(f, zap.String("ats", ev.ATS.Compliant))
	}
	if ev.Error != "" {
		f = append(f, zap.String("error", ev.Error))
		log.Warn("connection", f...)
		return
	}
	log.Info("connection", f...)
}
