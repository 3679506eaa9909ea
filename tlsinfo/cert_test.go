package tlsinfo

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// issue signs tmpl with the CA (the tests need extensions testpki does not
// offer).
func issue(t *testing.T, ca *testpki.CA, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key := testpki.NewKey(t, testpki.ECDSA256)
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(0x1234abcd)
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// sctList encodes n fake SCTs as the X.509 extension value.
func sctList(t *testing.T, n int) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for i := range n {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte{0, byte(i), 1, 2, 3}) })
		}
	})
	v, err := asn1.Marshal(b.BytesOrPanic())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSummarizeChain(t *testing.T) {
	p := newPKI(t)
	ecdsa384 := p.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA384, DNSNames: []string{"a.example", "b.example"}})
	selfSHA1 := p.ca.Leaf(t, testpki.LeafOpts{SelfSigned: true, SigAlg: x509.SHA1WithRSA})
	withSCTs := issue(t, p.ca, &x509.Certificate{
		Subject:            pkix.Name{CommonName: "ct.example"},
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 2, 3, 4}},
		ExtraExtensions:    []pkix.Extension{{Id: oidSCTList, Value: sctList(t, 3)}},
	})

	chain := []*x509.Certificate{p.rsa.Leaf, p.ca.Cert, ecdsa384.Leaf, selfSHA1.Leaf, withSCTs}
	got := SummarizeChain(chain)
	sum := sha256.Sum256(p.rsa.Leaf.Raw)
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"leaf subject", got[0].Subject, "CN=localhost"},
		{"leaf issuer", got[0].Issuer, "CN=tlsinfo test CA,O=inspectproxy tests"},
		{"leaf serial", got[0].Serial, p.rsa.Leaf.SerialNumber.Text(16)},
		{"leaf names", strings.Join(got[0].DNSNames, ","), "localhost"},
		{"leaf IPs", strings.Join(got[0].IPAddresses, ","), "127.0.0.1"},
		{"leaf key", [3]any{got[0].KeyType, got[0].KeyBits, got[0].Curve}, [3]any{"RSA", 2048, ""}},
		{"leaf signature", got[0].SignatureAlgorithm, "ECDSA-SHA256"},
		{"leaf sha256", got[0].SHA256, hex.EncodeToString(sum[:])},
		{"leaf flags", [2]bool{got[0].IsCA, got[0].SelfSigned}, [2]bool{false, false}},
		{"leaf EKU", strings.Join(got[0].ExtKeyUsage, ","), "serverAuth"},
		{"leaf validity", got[0].NotAfter, p.rsa.Leaf.NotAfter.UTC()},
		{"CA key", [3]any{got[1].KeyType, got[1].KeyBits, got[1].Curve}, [3]any{"ECDSA", 256, "P-256"}},
		{"CA flags", [2]bool{got[1].IsCA, got[1].SelfSigned}, [2]bool{true, true}},
		{"P-384 key", [3]any{got[2].KeyType, got[2].KeyBits, got[2].Curve}, [3]any{"ECDSA", 384, "P-384"}},
		{"SHA-1 self-signed", [2]any{got[3].SelfSigned, got[3].SignatureAlgorithm}, [2]any{true, "SHA1-RSA"}},
		{"SCTs", got[4].SCTs, 3},
		{"other EKUs", strings.Join(got[4].ExtKeyUsage, ","), "clientAuth,1.2.3.4"},
		{"no SCTs", got[0].SCTs, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	expired := p.ca.Leaf(t, testpki.LeafOpts{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	future := p.ca.Leaf(t, testpki.LeafOpts{NotBefore: now.Add(2 * time.Hour), NotAfter: now.Add(20 * time.Hour)})
	self := p.ca.Leaf(t, testpki.LeafOpts{SelfSigned: true})
	foreign := p.other.Leaf(t, testpki.LeafOpts{})
	clientOnly := issue(t, p.ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	// A leaf "issued" by another leaf, which may not sign.
	notCA := issue(t, &testpki.CA{Cert: p.rsa.Leaf, Key: p.rsa.PrivateKey.(crypto.Signer)},
		&x509.Certificate{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}})

	chain := func(c ...*x509.Certificate) []*x509.Certificate { return c }
	tests := []struct {
		name    string
		certs   []*x509.Certificate
		host    string
		kind    string
		message string
	}{
		{"valid", chain(p.rsa.Leaf, p.ca.Cert), "localhost", "", ""},
		{"valid without the root", chain(p.rsa.Leaf), "localhost", "", ""},
		{"valid IP", chain(p.ecdsa.Leaf, p.ca.Cert), "127.0.0.1", "", ""},
		{"valid bracketed IP", chain(p.ecdsa.Leaf), "[127.0.0.1]", "", ""},
		{"wrong name", chain(p.rsa.Leaf, p.ca.Cert), "example.com", VerifyHostnameMismatch, `leaf CN=localhost is not valid for "example.com" (names: localhost, 127.0.0.1)`},
		{"wrong IP", chain(p.rsa.Leaf), "10.0.0.1", VerifyHostnameMismatch, `is not valid for "10.0.0.1"`},
		{"expired", chain(expired.Leaf, p.ca.Cert), "localhost", VerifyExpired, "leaf CN=localhost expired " + expired.Leaf.NotAfter.UTC().Format(time.RFC3339)},
		{"not yet valid", chain(future.Leaf), "localhost", VerifyNotYetValid, "leaf CN=localhost is not valid before " + future.Leaf.NotBefore.UTC().Format(time.RFC3339)},
		{"self-signed", chain(self.Leaf), "localhost", VerifySelfSigned, "leaf CN=localhost is self-signed and not a trusted root"},
		{"unknown CA", chain(foreign.Leaf, p.other.Cert), "localhost", VerifyUnknownAuthority, "leaf CN=localhost chains to root CN=untrusted CA,O=inspectproxy tests, which is not trusted"},
		{"unknown CA, root not sent", chain(foreign.Leaf), "localhost", VerifyUnknownAuthority, "leaf CN=localhost has no valid path to a trusted root: x509: certificate signed by unknown authority"},
		{"client auth only", chain(clientOnly), "localhost", VerifyIncompatibleUsage, "leaf CN=localhost is not valid for server authentication (extended key usage: clientAuth)"},
		{"signed by a leaf", chain(notCA, p.rsa.Leaf, p.ca.Cert), "localhost", VerifyUnknownAuthority, `has no valid path to a trusted root: x509: certificate signed by unknown authority (possibly because of "x509: invalid signature: parent certificate cannot sign this kind of certificate"`},
		{"empty", nil, "localhost", VerifyOther, "no certificates to verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.certs, tt.host, p.ca.Pool, now)
			if tt.kind == "" {
				if err != nil {
					t.Errorf("Verify = %v, want nil", err)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Kind != tt.kind || !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Verify = %v (%T), want kind %s with %q", err, err, tt.kind, tt.message)
			}
		})
	}
	t.Run("x509 error kept", func(t *testing.T) {
		err := Verify(chain(p.rsa.Leaf), "example.com", p.ca.Pool, now)
		var he x509.HostnameError
		if !errors.As(err, &he) {
			t.Errorf("%v does not wrap x509.HostnameError", err)
		}
	})
	t.Run("system roots", func(t *testing.T) {
		var ve *VerifyError
		if err := Verify(chain(p.rsa.Leaf, p.ca.Cert), "localhost", nil, now); !errors.As(err, &ve) || ve.Kind != VerifyUnknownAuthority {
			t.Errorf("a test CA verified against the system pool: %v", err)
		}
	})
}
