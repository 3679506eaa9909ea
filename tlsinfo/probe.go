package tlsinfo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"time"
)

// maxErrorTTL bounds how long a failed probe is remembered: long enough to
// spare a dead server a probe per connection, short enough to recover.
const maxErrorTTL = 10 * time.Second

// ProbeResult is what a side handshake with a server showed. Results are
// shared between callers and must not be modified.
type ProbeResult struct {
	Certificates []*x509.Certificate
	Version      uint16
	CipherSuite  uint16
	// ALPN is what the server chose from "h2" and "http/1.1".
	ALPN        string
	OCSPStapled bool
	// SCTs counts the timestamps delivered in the TLS extension; embedded
	// ones are counted per certificate by SummarizeChain.
	SCTs    int
	Elapsed time.Duration
}

// Prober fetches the certificate chain TLS 1.3 hides from a passive
// observer by doing its own handshake with the server. Results are cached
// per address and SNI; concurrent callers for the same key share one
// handshake. It is safe for concurrent use.
type Prober struct {
	timeout, ttl, errTTL time.Duration

	mu      sync.Mutex
	cache   map[string]*probeEntry
	sweepAt time.Time
}

type probeEntry struct {
	done    chan struct{} // closed when res, err and expires are set
	res     *ProbeResult
	err     error
	expires time.Time
	// abandoned means the caller running the probe gave up (its context
	// ended) before the server answered: waiters must try again.
	abandoned bool
}

// testHookProbeWait, when set, is called as a caller starts waiting for
// another caller's probe.
var testHookProbeWait func()

// NewProber returns a Prober whose handshakes give up after timeout and
// whose results are reused for ttl (failures for at most 10 s).
func NewProber(timeout, ttl time.Duration) *Prober {
	return &Prober{
		timeout: timeout,
		ttl:     ttl,
		errTTL:  min(ttl, maxErrorTTL),
		cache:   make(map[string]*probeEntry),
	}
}

// Probe handshakes with addr (host:port) sending sni (none if empty) and
// returns the server's chain and choices, from the cache when fresh.
func (p *Prober) Probe(ctx context.Context, addr, sni string) (*ProbeResult, error) {
	key := addr + "\x00" + sni
	for {
		p.mu.Lock()
		now := time.Now()
		e := p.cache[key]
		if e != nil && isClosed(e.done) && !now.Before(e.expires) {
			e = nil
		}
		if e == nil {
			e = &probeEntry{done: make(chan struct{})}
			p.sweep(now)
			p.cache[key] = e
			p.mu.Unlock()
			return p.run(ctx, key, e, addr, sni)
		}
		p.mu.Unlock()
		if !isClosed(e.done) && testHookProbeWait != nil {
			testHookProbeWait()
		}
		select {
		case <-e.done:
			if e.abandoned {
				continue
			}
			return e.res, e.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// run performs the probe for entry e and publishes its outcome.
func (p *Prober) run(ctx context.Context, key string, e *probeEntry, addr, sni string) (*ProbeResult, error) {
	res, err := p.handshake(ctx, addr, sni)
	p.mu.Lock()
	defer p.mu.Unlock()
	e.res, e.err = res, err
	switch {
	case err != nil && ctx.Err() != nil:
		// The caller's context ended, which says nothing about the
		// server: do not cache it.
		e.abandoned = true
		delete(p.cache, key)
	case err != nil:
		e.expires = time.Now().Add(p.errTTL)
	default:
		e.expires = time.Now().Add(p.ttl)
	}
	close(e.done)
	return res, err
}

// sweep drops expired entries, at most once per ttl, so the cache holds
// only the keys probed within about two ttls. Called with p.mu held.
func (p *Prober) sweep(now time.Time) {
	if now.Before(p.sweepAt) {
		return
	}
	p.sweepAt = now.Add(p.ttl)
	for k, e := range p.cache {
		if isClosed(e.done) && !now.Before(e.expires) {
			delete(p.cache, k)
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// handshake does one TLS handshake and reports what the server sent.
func (p *Prober) handshake(ctx context.Context, addr, sni string) (*ProbeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tlsinfo: probe %s: %w", addr, err)
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{
		ServerName: sni,
		// The probe only fetches the chain; judging it is Verify's job,
		// and a chain that would fail verification is exactly the one a
		// report needs to see.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS10,
		NextProtos:         []string{"h2", "http/1.1"},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tlsinfo: probe %s (SNI %q): %w", addr, sni, err)
	}
	st := tc.ConnectionState()
	return &ProbeResult{
		Certificates: st.PeerCertificates,
		Version:      st.Version,
		CipherSuite:  st.CipherSuite,
		ALPN:         st.NegotiatedProtocol,
		OCSPStapled:  len(st.OCSPResponse) > 0,
		SCTs:         len(st.SignedCertificateTimestamps),
		Elapsed:      time.Since(start),
	}, nil
}
