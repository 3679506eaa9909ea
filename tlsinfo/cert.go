package tlsinfo

import (
	"bytes"
	"crypto/dsa"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/inspectproxy/inspectproxy/event"
)

// oidSCTList is the X.509v3 extension holding embedded signed certificate
// timestamps (RFC 6962 section 3.3).
var oidSCTList = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 4, 2}

// SummarizeChain describes each certificate of a chain, in order.
func SummarizeChain(certs []*x509.Certificate) []event.Cert {
	out := make([]event.Cert, 0, len(certs))
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		s := event.Cert{
			Subject:            c.Subject.String(),
			Issuer:             c.Issuer.String(),
			DNSNames:           c.DNSNames,
			NotBefore:          c.NotBefore.UTC(),
			NotAfter:           c.NotAfter.UTC(),
			SignatureAlgorithm: c.SignatureAlgorithm.String(),
			SHA256:             hex.EncodeToString(sum[:]),
			IsCA:               c.IsCA,
			SelfSigned:         isSelfSigned(c),
			ExtKeyUsage:        extKeyUsageNames(c),
			SCTs:               countSCTs(c),
		}
		if c.SerialNumber != nil {
			s.Serial = c.SerialNumber.Text(16)
		}
		for _, ip := range c.IPAddresses {
			s.IPAddresses = append(s.IPAddresses, ip.String())
		}
		s.KeyType, s.KeyBits, s.Curve = keyInfo(c.PublicKey)
		out = append(out, s)
	}
	return out
}

func keyInfo(pub any) (typ string, bits int, curve string) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RSA", k.N.BitLen(), ""
	case *ecdsa.PublicKey:
		return "ECDSA", k.Curve.Params().BitSize, k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519", 256, ""
	case *ecdh.PublicKey:
		// x509 parses X25519 subject keys (RFC 8410) as ecdh keys.
		return "X25519", 256, "X25519"
	case *dsa.PublicKey: // deprecated, but x509 still parses old DSA chains
		return "DSA", k.P.BitLen(), ""
	}
	return "unknown", 0, ""
}

// isSelfSigned: issuer equals subject and the certificate's own key
// verifies its signature. Go refuses to check SHA-1 (and MD5) signatures
// at all, so for those matching names and key identifiers have to do.
func isSelfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		return false
	}
	err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
	var insecure x509.InsecureAlgorithmError
	if errors.As(err, &insecure) {
		return len(c.AuthorityKeyId) == 0 || bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId)
	}
	return err == nil
}

var extKeyUsageNamesTable = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:                            "any",
	x509.ExtKeyUsageServerAuth:                     "serverAuth",
	x509.ExtKeyUsageClientAuth:                     "clientAuth",
	x509.ExtKeyUsageCodeSigning:                    "codeSigning",
	x509.ExtKeyUsageEmailProtection:                "emailProtection",
	x509.ExtKeyUsageIPSECEndSystem:                 "ipsecEndSystem",
	x509.ExtKeyUsageIPSECTunnel:                    "ipsecTunnel",
	x509.ExtKeyUsageIPSECUser:                      "ipsecUser",
	x509.ExtKeyUsageTimeStamping:                   "timeStamping",
	x509.ExtKeyUsageOCSPSigning:                    "OCSPSigning",
	x509.ExtKeyUsageMicrosoftServerGatedCrypto:     "msSGC",
	x509.ExtKeyUsageNetscapeServerGatedCrypto:      "nsSGC",
	x509.ExtKeyUsageMicrosoftCommercialCodeSigning: "msCodeCom",
	x509.ExtKeyUsageMicrosoftKernelCodeSigning:     "msKernelCodeSigning",
}

// extKeyUsageNames names the extended key usages, unknown ones by OID.
func extKeyUsageNames(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.ExtKeyUsage {
		name, ok := extKeyUsageNamesTable[u]
		if !ok {
			name = fmt.Sprintf("ExtKeyUsage(%d)", u)
		}
		out = append(out, name)
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	return out
}

// countSCTs counts the entries of the embedded SCT list: an OCTET STRING
// holding a TLS-encoded SignedCertificateTimestampList (RFC 6962 section
// 3.3). A malformed list counts the entries read before the damage.
func countSCTs(c *x509.Certificate) int {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSCTList) {
			continue
		}
		var octets []byte
		if rest, err := asn1.Unmarshal(ext.Value, &octets); err != nil || len(rest) != 0 {
			return 0
		}
		s := cryptobyte.String(octets)
		var list cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&list) {
			return 0
		}
		n := 0
		for !list.Empty() {
			var sct cryptobyte.String
			if !list.ReadUint16LengthPrefixed(&sct) || sct.Empty() {
				break
			}
			n++
		}
		return n
	}
	return 0
}

// Kinds of verification failure, stable words for reports.
const (
	VerifyExpired           = "expired"
	VerifyNotYetValid       = "not_yet_valid"
	VerifySelfSigned        = "self_signed"
	VerifyUnknownAuthority  = "unknown_authority"
	VerifyHostnameMismatch  = "hostname_mismatch"
	VerifyIncompatibleUsage = "incompatible_usage"
	VerifyOther             = "other"
)

// VerifyError is a failed chain verification. Kind is one of the Verify*
// constants; Err says which certificate failed and why, and wraps the
// crypto/x509 error.
type VerifyError struct {
	Kind string
	Err  error
}

func (e *VerifyError) Error() string { return e.Err.Error() }

func (e *VerifyError) Unwrap() error { return e.Err }

// Verify checks a chain as a TLS client would: leaf first, the rest as
// intermediates, for host (a DNS name or an IP literal, checked against the
// IP SANs), trusting roots (nil: the system pool) at time now, for server
// authentication. It returns nil or a *VerifyError.
func Verify(certs []*x509.Certificate, host string, roots *x509.CertPool, now time.Time) error {
	if len(certs) == 0 {
		return &VerifyError{Kind: VerifyOther, Err: errors.New("no certificates to verify")}
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	_, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       host,
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err == nil {
		return nil
	}
	return classify(err, certs, host, roots, now)
}

// classify turns an x509 error into a VerifyError naming the culprit.
func classify(err error, certs []*x509.Certificate, host string, roots *x509.CertPool, now time.Time) *VerifyError {
	leaf := certs[0]
	var (
		invalid  x509.CertificateInvalidError
		hostErr  x509.HostnameError
		unknown  x509.UnknownAuthorityError
		kind     = VerifyOther
		describe string
	)
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		c := invalid.Cert
		if c == nil {
			c = leaf
		}
		name := certRole(c, certs)
		if now.Before(c.NotBefore) {
			kind = VerifyNotYetValid
			describe = fmt.Sprintf("%s is not valid before %s (now %s)", name, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		} else {
			kind = VerifyExpired
			describe = fmt.Sprintf("%s expired %s (now %s)", name, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		kind = VerifyIncompatibleUsage
		describe = fmt.Sprintf("%s is not valid for server authentication (extended key usage: %s)",
			certRole(leaf, certs), strings.Join(extKeyUsageNames(leaf), ", "))
	case errors.As(err, &hostErr):
		kind = VerifyHostnameMismatch
		describe = fmt.Sprintf("%s is not valid for %q (names: %s)", certRole(leaf, certs), host, strings.Join(sanList(leaf), ", "))
	case errors.As(err, &unknown):
		kind = VerifyUnknownAuthority
		last := certs[len(certs)-1]
		switch {
		case isSelfSigned(leaf):
			kind = VerifySelfSigned
			describe = fmt.Sprintf("%s is self-signed and not a trusted root", certRole(leaf, certs))
		case isSelfSigned(last) && !trusted(last, roots, now):
			describe = fmt.Sprintf("%s chains to %s, which is not trusted", certRole(leaf, certs), certRole(last, certs))
		default:
			describe = fmt.Sprintf("%s has no valid path to a trusted root", certRole(leaf, certs))
		}
	default:
		describe = "chain from " + certRole(leaf, certs) + " rejected"
	}
	return &VerifyError{Kind: kind, Err: fmt.Errorf("%s: %w", describe, err)}
}

// trusted reports whether a self-signed certificate is one of the roots.
func trusted(root *x509.Certificate, roots *x509.CertPool, now time.Time) bool {
	_, err := root.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// certRole names a certificate by its place in the chain and its subject:
// "leaf CN=example.com", "intermediate 1 CN=...", "root CN=...".
func certRole(c *x509.Certificate, certs []*x509.Certificate) string {
	role := "root"
	switch i := slices.IndexFunc(certs, c.Equal); {
	case i == 0:
		role = "leaf"
	case i > 0 && !isSelfSigned(c):
		role = fmt.Sprintf("intermediate %d", i)
	}
	subject := c.Subject.String()
	if subject == "" {
		subject = "(empty subject)"
	}
	return role + " " + subject
}

func sanList(c *x509.Certificate) []string {
	out := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	if len(out) == 0 {
		out = []string{"none"}
	}
	return out
}
