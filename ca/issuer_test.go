package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

func newIssuer(t *testing.T, opts IssuerOptions) *Issuer {
	t.Helper()
	c, err := Init(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// TestHandshake serves Issuer.TLSConfig on loopback and dials it with a
// client that trusts only the exported CA.
func TestHandshake(t *testing.T) {
	iss := newIssuer(t, IssuerOptions{})
	var exported bytes.Buffer
	if err := iss.ca.WritePEM(&exported); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(exported.Bytes()) {
		t.Fatal("exported PEM holds no certificate")
	}

	for _, tc := range []struct {
		name       string
		connect    string // the CONNECT host given to TLSConfig
		serverName string // what the client verifies; SNI unless an IP
		version    uint16
		wantDNS    []string
		wantIP     net.IP
	}{
		{name: "SNI TLS 1.3", connect: "example.test:443", serverName: "example.test", version: tls.VersionTLS13, wantDNS: []string{"example.test"}},
		{name: "SNI TLS 1.2", connect: "example.test:443", serverName: "example.test", version: tls.VersionTLS12, wantDNS: []string{"example.test"}},
		{name: "SNI wins over CONNECT host", connect: "203.0.113.7:443", serverName: "api.example.test", version: tls.VersionTLS13, wantDNS: []string{"api.example.test"}},
		{name: "no SNI, IPv4 host", connect: "127.0.0.1:443", serverName: "127.0.0.1", version: tls.VersionTLS13, wantIP: net.IPv4(127, 0, 0, 1)},
		{name: "no SNI, IPv6 host", connect: "[::1]:443", serverName: "::1", version: tls.VersionTLS13, wantIP: net.IPv6loopback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testpki.StartTLS(t, iss.TLSConfig(tc.connect), nil)
			conn, err := tls.Dial("tcp", srv.Addr, &tls.Config{
				RootCAs:    roots,
				ServerName: tc.serverName,
				MinVersion: tc.version,
				MaxVersion: tc.version,
			})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := conn.Read(buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo = %q, %v", buf, err)
			}
			st := conn.ConnectionState()
			leaf := st.PeerCertificates[0]
			if !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Errorf("DNS SANs = %q, want %q", leaf.DNSNames, tc.wantDNS)
			}
			if tc.wantIP != nil && (len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(tc.wantIP)) {
				t.Errorf("IP SANs = %v, want %v", leaf.IPAddresses, tc.wantIP)
			}
			if len(st.PeerCertificates) != 2 || !st.PeerCertificates[1].Equal(iss.ca.Certificate()) {
				t.Errorf("chain has %d certificates, want leaf and CA", len(st.PeerCertificates))
			}
		})
	}
}

func TestGetCertificateNeedsSNI(t *testing.T) {
	iss := newIssuer(t, IssuerOptions{})
	if _, err := iss.GetCertificate(&tls.ClientHelloInfo{}); !errors.Is(err, ErrNoServerName) {
		t.Errorf("GetCertificate without SNI = %v, want ErrNoServerName", err)
	}
	if _, err := iss.TLSConfig("").GetCertificate(&tls.ClientHelloInfo{}); !errors.Is(err, ErrNoServerName) {
		t.Errorf("TLSConfig(\"\") without SNI = %v, want ErrNoServerName", err)
	}
}

// TestLeafProperties checks what Apple requires of a leaf: P-256 or RSA
// >= 2048, SHA-256, the name in the SAN, serverAuth, validity <= 825 days
// (397 by default, which also meets the 398-day rule).
func TestLeafProperties(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validity time.Duration
		want     time.Duration
	}{
		{"default", 0, 397 * 24 * time.Hour},
		{"maximum", MaxLeafValidity, 825 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := newIssuer(t, IssuerOptions{Validity: tc.validity})
			before := time.Now()
			tc1, err := iss.Certificate("Example.TEST.")
			if err != nil {
				t.Fatal(err)
			}
			leaf := tc1.Leaf
			if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
			}
			if leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
				t.Errorf("signature %v, want ECDSA-SHA256", leaf.SignatureAlgorithm)
			}
			if !slices.Equal(leaf.DNSNames, []string{"example.test"}) || leaf.Subject.CommonName != "example.test" {
				t.Errorf("names: SAN %q CN %q, want example.test", leaf.DNSNames, leaf.Subject.CommonName)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("EKU %v, want serverAuth", leaf.ExtKeyUsage)
			}
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA=%v KeyUsage=%v", leaf.IsCA, leaf.KeyUsage)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life != tc.want || life > 825*24*time.Hour {
				t.Errorf("validity %v, want %v", life, tc.want)
			}
			if skew := before.Sub(leaf.NotBefore); skew < 59*time.Minute || skew > 61*time.Minute {
				t.Errorf("NotBefore %v before issuance, want about an hour", skew)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{
				DNSName: "example.test",
				Roots:   iss.ca.pool(t),
			}); err != nil {
				t.Errorf("verify: %v", err)
			}
			other, err := iss.Certificate("other.example.test")
			if err != nil {
				t.Fatal(err)
			}
			if other.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
				t.Error("two leaves share a key")
			}
		})
	}
}

func (c *CA) pool(t *testing.T) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

func TestIssuerOptions(t *testing.T) {
	c, err := Init(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts IssuerOptions
		ok   bool
	}{
		{"zero", IssuerOptions{}, true},
		{"825 days", IssuerOptions{Validity: MaxLeafValidity}, true},
		{"826 days", IssuerOptions{Validity: MaxLeafValidity + 24*time.Hour}, false},
		{"shorter than the backdating", IssuerOptions{Validity: 30 * time.Minute}, false},
		{"negative cache", IssuerOptions{CacheSize: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewIssuer(c, tc.opts)
			if (err == nil) != tc.ok {
				t.Errorf("NewIssuer(%+v) = %v, want ok=%v", tc.opts, err, tc.ok)
			}
		})
	}
}

func TestCache(t *testing.T) {
	iss := newIssuer(t, IssuerOptions{CacheSize: 2})
	get := func(name string) *tls.Certificate {
		t.Helper()
		c, err := iss.Certificate(name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := get("a.test")
	if get("a.test") != a || get("A.test.") != a {
		t.Fatal("second request for a name issued again")
	}
	b := get("b.test")
	if b == a {
		t.Fatal("two names share a certificate")
	}
	get("a.test") // a is now the most recently used
	get("c.test") // evicts b
	if get("a.test") != a {
		t.Error("recently used a.test was evicted")
	}
	if get("b.test") == b {
		t.Error("least recently used b.test was kept beyond the cache size")
	}
}

func TestRenewal(t *testing.T) {
	iss := newIssuer(t, IssuerOptions{Validity: 90 * 24 * time.Hour})
	now := time.Now()
	iss.now = func() time.Time { return now }

	first, err := iss.Certificate("renew.test")
	if err != nil {
		t.Fatal(err)
	}
	// Renewal starts when a third of the lifetime is left.
	renewAt := first.Leaf.NotAfter.Add(-30 * 24 * time.Hour)
	for _, tc := range []struct {
		name  string
		at    time.Time
		fresh bool
	}{
		{"just before renewal", renewAt.Add(-time.Minute), true},
		{"at renewal", renewAt, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now = tc.at
			got, err := iss.Certificate("renew.test")
			if err != nil {
				t.Fatal(err)
			}
			if (got == first) != tc.fresh {
				t.Errorf("cached leaf returned = %v, want %v", got == first, tc.fresh)
			}
			if !tc.fresh && !got.Leaf.NotAfter.After(first.Leaf.NotAfter) {
				t.Errorf("renewed leaf expires %v, not after %v", got.Leaf.NotAfter, first.Leaf.NotAfter)
			}
		})
	}
}

func TestCAExpiry(t *testing.T) {
	iss := newIssuer(t, IssuerOptions{})
	root := iss.ca.Certificate().NotAfter

	iss.now = func() time.Time { return root.Add(-10 * 24 * time.Hour) }
	c, err := iss.Certificate("late.test")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotAfter.Equal(root) {
		t.Errorf("leaf expires %v, after its root %v", c.Leaf.NotAfter, root)
	}

	iss.now = func() time.Time { return root.Add(time.Hour) }
	if _, err := iss.Certificate("expired.test"); err == nil {
		t.Error("issued under an expired CA")
	}
	// The failure is not cached.
	iss.now = time.Now
	if _, err := iss.Certificate("expired.test"); err != nil {
		t.Errorf("after the clock is fixed: %v", err)
	}
}

// TestConcurrentIssuance asks for names from many goroutines at once.
func TestConcurrentIssuance(t *testing.T) {
	const n = 64
	for _, tc := range []struct {
		name      string
		cacheSize int
		// others are names asked for meanwhile, to churn the cache.
		others []string
		// shared says every goroutine must get the same certificate: it
		// was issued once.
		shared bool
	}{
		{name: "one name", shared: true},
		{name: "evictions", cacheSize: 2, others: []string{"x.test", "y.test", "z.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := newIssuer(t, IssuerOptions{CacheSize: tc.cacheSize})
			got := make([]*tls.Certificate, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for g := range n {
				wg.Go(func() {
					<-start
					if len(tc.others) > 0 {
						if _, err := iss.Certificate(tc.others[g%len(tc.others)]); err != nil {
							t.Error(err)
						}
					}
					c, err := iss.Certificate("same.test")
					if err != nil {
						t.Error(err)
					}
					got[g] = c
				})
			}
			close(start)
			wg.Wait()
			for g, c := range got {
				if c == nil || !slices.Equal(c.Leaf.DNSNames, []string{"same.test"}) {
					t.Fatalf("goroutine %d got %v", g, c)
				}
				if tc.shared && c != got[0] {
					t.Fatalf("goroutine %d got %p, goroutine 0 got %p: issued more than once", g, c, got[0])
				}
			}
		})
	}
}
