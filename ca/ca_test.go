package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInitLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, err := Init(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		for path, want := range map[string]os.FileMode{
			dir:                          0o700,
			filepath.Join(dir, KeyFile):  0o600,
			filepath.Join(dir, CertFile): 0o644,
		} {
			if got := mode(t, path); got != want {
				t.Errorf("mode of %s = %v, want %v", path, got, want)
			}
		}
	}
	// No temporary files are left behind.
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("directory holds %d entries, want 2", len(ents))
	}

	cert := c.Certificate()
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 || !cert.MaxPathLenZero {
		t.Errorf("CA flags: IsCA=%v KeyUsage=%v MaxPathLenZero=%v", cert.IsCA, cert.KeyUsage, cert.MaxPathLenZero)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", cert.PublicKey)
	}
	if !strings.HasPrefix(cert.Subject.CommonName, "inspectproxy CA ") ||
		!strings.HasSuffix(cert.Subject.CommonName, time.Now().UTC().Format(time.DateOnly)) {
		t.Errorf("subject = %q", cert.Subject.CommonName)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if life := cert.NotAfter.Sub(time.Now()); life < 9*365*24*time.Hour {
		t.Errorf("root valid for %v only", life)
	}

	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Fingerprint() != c.Fingerprint() {
		t.Errorf("loaded %s, created %s", loaded, c)
	}
	if !loaded.key.Public().(*ecdsa.PublicKey).Equal(c.key.Public()) {
		t.Error("loaded key differs from created key")
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		present []string
	}{
		{"both", []string{CertFile, KeyFile}},
		{"cert only", []string{CertFile}},
		{"key only", []string{KeyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.present {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("old "+f), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Init(dir, false); !errors.Is(err, ErrExists) {
				t.Fatalf("Init = %v, want ErrExists", err)
			}
			for _, f := range tc.present {
				if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != "old "+f {
					t.Errorf("%s was changed", f)
				}
			}
			c, err := Init(dir, true)
			if err != nil {
				t.Fatalf("Init with force: %v", err)
			}
			loaded, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if loaded.Fingerprint() != c.Fingerprint() {
				t.Error("forced Init did not replace the CA")
			}
		})
	}
}

// writeCA writes a CA directory by hand, for keys and certificates Init
// would never make.
func writeCA(t *testing.T, key crypto.Signer, tmpl *x509.Certificate) string {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func rootTemplate(isCA bool) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hand-made"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour * 24 * 30),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
}

func TestLoadRSA(t *testing.T) {
	dir := writeCA(t, testpki.NewKey(t, testpki.RSA2048), rootTemplate(true))
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(c, IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := iss.Certificate("rsa.example")
	if err != nil {
		t.Fatal(err)
	}
	if alg := leaf.Leaf.SignatureAlgorithm; alg != x509.SHA256WithRSA {
		t.Errorf("leaf under RSA CA signed with %v, want SHA256-RSA", alg)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T) string
		want    error  // matched with errors.Is when set
		message string // a substring of the error
	}{
		{
			name:    "missing",
			setup:   func(t *testing.T) string { return filepath.Join(t.TempDir(), "none") },
			want:    fs.ErrNotExist,
			message: KeyFile,
		},
		{
			name: "tampered key",
			setup: func(t *testing.T) string {
				dir := initCA(t)
				other := t.TempDir()
				if _, err := Init(other, false); err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(filepath.Join(other, KeyFile))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, KeyFile), b, 0o600); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			want:    ErrKeyMismatch,
			message: "does not match",
		},
		{
			name: "key readable by others",
			setup: func(t *testing.T) string {
				if runtime.GOOS == "windows" {
					t.Skip("no Unix modes")
				}
				dir := initCA(t)
				if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			want:    ErrKeyPermissions,
			message: "chmod 600",
		},
		{
			name: "garbage key",
			setup: func(t *testing.T) string {
				dir := initCA(t)
				if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			message: "cannot parse",
		},
		{
			name: "garbage certificate",
			setup: func(t *testing.T) string {
				dir := initCA(t)
				if err := os.WriteFile(filepath.Join(dir, CertFile), []byte("not PEM"), 0o644); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			message: "no CERTIFICATE",
		},
		{
			name:    "not a CA",
			setup:   func(t *testing.T) string { return writeCA(t, testpki.NewKey(t, testpki.ECDSA256), rootTemplate(false)) },
			message: "not a CA",
		},
		{
			name:    "small RSA key",
			setup:   func(t *testing.T) string { return writeCA(t, testpki.NewKey(t, testpki.RSA1024), rootTemplate(true)) },
			message: "1024 bits",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t)
			c, err := Load(dir)
			if err == nil {
				t.Fatalf("Load = %v, want an error", c)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Load error %q is not %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("Load error %q does not say %q", err, tc.message)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Errorf("Load error %q shows key material", err)
			}
		})
	}
}

func initCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := Init(dir, false); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestExport(t *testing.T) {
	c, err := Init(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	var p, d bytes.Buffer
	if err := c.WritePEM(&p); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteDER(&d); err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(p.Bytes())
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("WritePEM wrote %q", p.String())
	}
	if !bytes.Equal(block.Bytes, c.Certificate().Raw) || !bytes.Equal(d.Bytes(), c.Certificate().Raw) {
		t.Error("exports differ from the certificate")
	}
	sum := sha256.Sum256(d.Bytes())
	if got, want := strings.ReplaceAll(c.Fingerprint(), ":", ""), strings.ToUpper(hex.EncodeToString(sum[:])); got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
	if len(c.Fingerprint()) != 32*3-1 {
		t.Errorf("Fingerprint %q is not colon-separated bytes", c.Fingerprint())
	}
}

// TestKeyNeverShown checks that the private key's material appears in no
// rendering of the CA, the Issuer or their errors.
func TestKeyNeverShown(t *testing.T) {
	dir := initCA(t)
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(c, IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Certificate("example.test"); err != nil {
		t.Fatal(err)
	}
	key := c.key.(*ecdsa.PrivateKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	d, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{
		new(big.Int).SetBytes(d).String(),
		hex.EncodeToString(d),
		strings.ToUpper(hex.EncodeToString(d)),
		string(keyPEM[28:60]), // base64 of the PKCS #8 body
		hex.EncodeToString(keyDER),
		"PRIVATE KEY",
	}

	var shown []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x"} {
		shown = append(shown, fmt.Sprintf(f, c), fmt.Sprintf(f, *c), fmt.Sprintf(f, iss))
	}
	shown = append(shown, c.String())
	// An error from the key file path must not quote it either.
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err != nil {
		shown = append(shown, err.Error())
	}
	for _, s := range shown {
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Fatalf("key material %q shown in %q", secret, s)
			}
		}
	}
}
