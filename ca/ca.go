// Package ca is inspectproxy's own certificate authority for MITM mode: it
// creates and loads the root a user installs on a device, and issues the
// leaf certificates the proxy presents to clients.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// File names inside the CA directory.
const (
	CertFile = "ca.pem"
	KeyFile  = "ca-key.pem"
)

// rootValidity is typical for a local root. Apple's 825-day (and 398-day)
// limits apply to leaf certificates, not to roots a user installs.
const rootValidity = 10 * 365 * 24 * time.Hour

// clockSkew backdates NotBefore so a device whose clock runs a little
// behind still accepts fresh certificates.
const clockSkew = time.Hour

var (
	// ErrExists is returned by Init when a CA is already in the directory.
	ErrExists = errors.New("ca: CA already exists")
	// ErrKeyMismatch is returned by Load when the key is not the
	// certificate's.
	ErrKeyMismatch = errors.New("ca: private key does not match certificate")
	// ErrKeyPermissions is returned by Load when others can read the key.
	ErrKeyPermissions = errors.New("ca: private key file is readable by group or others")
)

// CA is a loaded certificate authority. Its private key never leaves the
// value: String, errors and the exports show only the certificate.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// Init creates a new CA in dir: an ECDSA P-256 key in KeyFile (mode 0600)
// and its self-signed certificate in CertFile (mode 0644). It refuses to
// replace an existing CA with ErrExists unless force is set.
func Init(dir string, force bool) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: create directory: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if !force {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%w: %s (ca init --force replaces it)", ErrExists, p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("ca: %w", err)
			}
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: rootName(now), Organization: []string{"inspectproxy"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Only leaves sit below this root.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse new certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode key: %w", err)
	}

	// The key goes first: a crash between the two renames then leaves a
	// key without a certificate, which Load reports, rather than a
	// certificate the user may install whose key is lost.
	if err := writeAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key}, nil
}

// rootName makes the subject name unique per machine and day, so a device
// with several installed inspectproxy roots shows which is which.
func rootName(now time.Time) string {
	name := "inspectproxy CA"
	if h, err := os.Hostname(); err == nil && h != "" {
		name += " " + h
	}
	return name + " " + now.UTC().Format(time.DateOnly)
}

// writeAtomic writes data to a temporary file in path's directory and
// renames it over path, so readers never see a partial file.
func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// CreateTemp makes the file 0600, so the key is never readable by
	// others, even for a moment; Chmod only widens the certificate.
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// Load reads the CA Init wrote in dir. It refuses a key file that group or
// others can read, a key that is not the certificate's, a certificate that
// is not a CA, and keys whose leaves would fail Apple's checks.
func Load(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)

	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	// Windows file modes do not express group or world access.
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v: run chmod 600 %s", ErrKeyPermissions, keyPath, fi.Mode().Perm(), keyPath)
	}

	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("ca: %s: no CERTIFICATE PEM block", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("ca: %s: %q is not a CA certificate", certPath, cert.Subject)
	}

	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	// Errors below name the file and the problem, never the key's bytes.
	block, _ = pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("ca: %s: no PKCS #8 PRIVATE KEY PEM block", keyPath)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: cannot parse PKCS #8 key", keyPath)
	}
	key, err := checkKey(parsed)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", keyPath, err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: %s is not the key of %s (%q)", ErrKeyMismatch, keyPath, certPath, cert.Subject)
	}
	return &CA{cert: cert, key: key}, nil
}

// checkKey accepts the CA keys whose signatures Apple accepts in a chain:
// ECDSA (signed with SHA-256 or stronger) and RSA of at least 2048 bits.
func checkKey(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits, want at least 2048", n)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T, want ECDSA or RSA", k)
	}
}

// Certificate returns the CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// WritePEM writes the CA certificate in PEM, for installing on a device.
func (c *CA) WritePEM(w io.Writer) error {
	if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}); err != nil {
		return fmt.Errorf("ca: write PEM: %w", err)
	}
	return nil
}

// WriteDER writes the CA certificate in DER (.cer), the form iOS and
// Android settings import most readily.
func (c *CA) WriteDER(w io.Writer) error {
	if _, err := w.Write(c.cert.Raw); err != nil {
		return fmt.Errorf("ca: write DER: %w", err)
	}
	return nil
}

// Fingerprint is the SHA-256 of the certificate, in colon-separated
// uppercase hex as openssl prints it and device settings show it.
func (c *CA) Fingerprint() string { return Fingerprint(c.cert) }

// Fingerprint is cert's SHA-256 as (*CA).Fingerprint writes it.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	for i, v := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", v)
	}
	return b.String()
}

// String names the CA by subject and fingerprint.
func (c *CA) String() string {
	return fmt.Sprintf("%s (SHA-256 %s)", c.cert.Subject.CommonName, c.Fingerprint())
}
