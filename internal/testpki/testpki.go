// Package testpki makes certificates and loopback TLS servers for tests:
// real keys, real chains, real sockets, with the weak settings an audit
// has to catch (small keys, SHA-1, expired, self-signed, wrong name).
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testnet"
)

// KeySpec names a key: "rsa1024", "rsa2048", "ecdsa256", "ecdsa384".
type KeySpec string

// Key kinds used by tests.
const (
	RSA1024  KeySpec = "rsa1024"
	RSA2048  KeySpec = "rsa2048"
	ECDSA256 KeySpec = "ecdsa256"
	ECDSA384 KeySpec = "ecdsa384"
)

var serial atomic.Int64

// NewKey generates a key of the given spec.
func NewKey(t testing.TB, spec KeySpec) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch spec {
	case RSA1024:
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case RSA2048, "":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case ECDSA256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSA384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		t.Fatalf("testpki: unknown key spec %q", spec)
	}
	if err != nil {
		t.Fatalf("testpki: generate %s: %v", spec, err)
	}
	return k
}

// CA is a test certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	Pool *x509.CertPool
}

// NewCA makes a self-signed root CA with an ECDSA P-256 key.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := NewKey(t, ECDSA256)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"inspectproxy tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testpki: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, Pool: pool}
}

// LeafOpts describes a leaf certificate. The zero value is a good
// ATS-compliant leaf for "localhost" and 127.0.0.1 with an RSA 2048 key.
type LeafOpts struct {
	Key       KeySpec
	DNSNames  []string // default localhost
	IPs       []net.IP // default 127.0.0.1
	SigAlg    x509.SignatureAlgorithm
	NotBefore time.Time
	NotAfter  time.Time
	// SelfSigned makes the leaf its own issuer instead of the CA's child.
	SelfSigned bool
	// NoServerAuth leaves out the serverAuth extended key usage.
	NoServerAuth bool
}

// Leaf issues a leaf certificate and returns it with its chain
// (leaf first, CA last unless self-signed).
func (ca *CA) Leaf(t testing.TB, o LeafOpts) tls.Certificate {
	t.Helper()
	key := NewKey(t, o.Key)
	if o.DNSNames == nil {
		o.DNSNames = []string{"localhost"}
	}
	if o.IPs == nil {
		o.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(serial.Add(1)),
		Subject:            pkix.Name{CommonName: o.DNSNames[0]},
		DNSNames:           o.DNSNames,
		IPAddresses:        o.IPs,
		NotBefore:          o.NotBefore,
		NotAfter:           o.NotAfter,
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		SignatureAlgorithm: o.SigAlg,
	}
	if !o.NoServerAuth {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	parent, signer := ca.Cert, ca.Key
	if o.SelfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatalf("testpki: create leaf: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse leaf: %v", err)
	}
	chain := [][]byte{der}
	if !o.SelfSigned {
		chain = append(chain, ca.Cert.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

// Server is a TLS server on loopback that echoes what it reads, or runs
// Handle when set.
type Server struct {
	Addr   string
	Config *tls.Config
}

// StartTLS starts a loopback TLS server with cfg; handle runs for each
// connection after the handshake (nil echoes). It stops at test cleanup.
func StartTLS(t testing.TB, cfg *tls.Config, handle func(*tls.Conn)) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testpki: listen: %v", err)
	}
	s := &Server{Addr: ln.Addr().String(), Config: cfg}
	testnet.Serve(t, ln, func(c net.Conn) { serve(tls.Server(c, cfg), handle) })
	return s
}

func serve(c *tls.Conn, handle func(*tls.Conn)) {
	defer c.Close()
	if err := c.Handshake(); err != nil {
		return
	}
	if handle != nil {
		handle(c)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// WriteFiles writes cert's chain and key as PEM files in a test directory,
// for peers that read files (openssl s_server), and returns their paths.
func WriteFiles(t testing.TB, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// WriteCert writes the CA certificate as a PEM file (curl --cacert) and
// returns its path.
func (ca *CA) WriteCert(t testing.TB) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
