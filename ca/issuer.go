package ca

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Leaf validity limits. Apple rejects TLS leaves valid for more than 825
// days under user-installed roots; 397 days also meets the 398-day rule
// for system roots, so a leaf passes whichever rule a client applies.
const (
	DefaultLeafValidity = 397 * 24 * time.Hour
	MaxLeafValidity     = 825 * 24 * time.Hour
	DefaultCacheSize    = 1024
)

// ErrNoServerName is returned when a client sent no SNI and no CONNECT
// host was given to fall back on.
var ErrNoServerName = errors.New("ca: no server name to issue a certificate for")

// IssuerOptions configures an Issuer. The zero value uses the defaults.
type IssuerOptions struct {
	// Validity is each leaf's lifetime, NotBefore to NotAfter: more than
	// an hour (NotBefore is an hour back) and at most MaxLeafValidity.
	Validity time.Duration
	// CacheSize bounds how many leaves are kept; the least recently used
	// goes first.
	CacheSize int
}

// Issuer signs leaf certificates for the names clients connect to and
// caches them. It is safe for concurrent use.
type Issuer struct {
	ca       *CA
	validity time.Duration
	size     int
	now      func() time.Time

	mu      sync.Mutex
	lru     *list.List               // of *leaf, most recently used first
	entries map[string]*list.Element // by name
}

// leaf is one cache entry. ready is closed once cert or err is set, so
// concurrent requests for a name wait for a single issuance.
type leaf struct {
	name  string
	ready chan struct{}
	cert  *tls.Certificate
	err   error
}

// NewIssuer returns an Issuer that signs with ca.
func NewIssuer(ca *CA, opts IssuerOptions) (*Issuer, error) {
	if opts.Validity == 0 {
		opts.Validity = DefaultLeafValidity
	}
	// Leaves start clockSkew in the past, so a shorter validity would
	// issue leaves that are already expired.
	if opts.Validity <= clockSkew || opts.Validity > MaxLeafValidity {
		return nil, fmt.Errorf("ca: leaf validity %v outside (%v, %v]: Apple rejects longer leaves", opts.Validity, clockSkew, MaxLeafValidity)
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("ca: negative cache size %d", opts.CacheSize)
	}
	return &Issuer{
		ca:       ca,
		validity: opts.Validity,
		size:     opts.CacheSize,
		now:      time.Now,
		lru:      list.New(),
		entries:  make(map[string]*list.Element),
	}, nil
}

// GetCertificate returns a leaf for the client's SNI, for use as
// tls.Config.GetCertificate. Clients that send no SNI get ErrNoServerName;
// TLSConfig handles them.
func (i *Issuer) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return i.Certificate(hello.ServerName)
}

// TLSConfig returns a server config for a MITM'd CONNECT to host ("host"
// or "host:port"). Its leaf is for the client's SNI, or for host when the
// client sent none, as clients do for IP addresses. The config is new on
// every call, so callers may change it.
func (i *Issuer) TLSConfig(host string) *tls.Config {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" {
				return i.Certificate(hello.ServerName)
			}
			return i.Certificate(host)
		},
	}
}

// Certificate returns a leaf for name, a DNS name or an IP address, from
// the cache when a fresh one is there. Concurrent calls for one name
// share one issuance.
func (i *Issuer) Certificate(name string) (*tls.Certificate, error) {
	name = strings.ToLower(strings.TrimSuffix(strings.Trim(name, "[]"), "."))
	if name == "" {
		return nil, ErrNoServerName
	}

	i.mu.Lock()
	if el, ok := i.entries[name]; ok {
		e := el.Value.(*leaf)
		select {
		case <-e.ready:
			if e.err == nil && i.fresh(e.cert.Leaf) {
				i.lru.MoveToFront(el)
				i.mu.Unlock()
				return e.cert, nil
			}
			i.remove(el)
		default:
			i.lru.MoveToFront(el)
			i.mu.Unlock()
			<-e.ready
			return e.cert, e.err
		}
	}
	e := &leaf{name: name, ready: make(chan struct{})}
	i.entries[name] = i.lru.PushFront(e)
	for i.lru.Len() > i.size {
		i.remove(i.lru.Back())
	}
	i.mu.Unlock()

	e.cert, e.err = i.issue(name)
	if e.err != nil {
		// Failures are not cached: the next handshake tries again.
		i.mu.Lock()
		if el, ok := i.entries[name]; ok && el.Value == e {
			i.remove(el)
		}
		i.mu.Unlock()
	}
	close(e.ready)
	return e.cert, e.err
}

func (i *Issuer) remove(el *list.Element) {
	delete(i.entries, el.Value.(*leaf).name)
	i.lru.Remove(el)
}

// fresh reports whether more than a third of cert's lifetime is left, so
// leaves are renewed well before devices with a fast clock reject them.
func (i *Issuer) fresh(cert *x509.Certificate) bool {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return i.now().Before(cert.NotAfter.Add(-life / 3))
}

// issue signs a new leaf for name with its own P-256 key.
func (i *Issuer) issue(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate leaf key for %s: %w", name, err)
	}
	notBefore := i.now().Add(-clockSkew)
	notAfter := notBefore.Add(i.validity)
	// A leaf cannot outlive its root.
	if root := i.ca.cert.NotAfter; notAfter.After(root) {
		notAfter = root
	}
	if !notAfter.After(i.now()) {
		return nil, fmt.Errorf("ca: cannot issue for %s: CA %q expired at %v", name, i.ca.cert.Subject.CommonName, i.ca.cert.NotAfter)
	}
	tmpl := &x509.Certificate{
		// CN is ignored by Apple and browsers but still read by some
		// older clients; the SAN is what counts.
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{name}
	}
	// The signature algorithm follows the CA key: SHA-256 for P-256 and
	// RSA, stronger hashes for larger curves, as ATS requires.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.ca.cert, key.Public(), i.ca.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign leaf for %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse leaf for %s: %w", name, err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, i.ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	}, nil
}
