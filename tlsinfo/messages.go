package tlsinfo

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
)

// maxChainLen bounds how many certificates of one Certificate message are
// parsed: real chains have a handful, and each parse costs CPU a hostile
// server could otherwise multiply.
const maxChainLen = 32

// parseCertificate parses a TLS 1.2-and-earlier Certificate message
// (RFC 5246 section 7.4.2): the framing must be sound (else err), while a
// certificate x509 cannot parse is reported in certErr and skipped, so one
// odd certificate does not hide the rest of the chain.
func parseCertificate(msg []byte) (certs []*x509.Certificate, certErr, err error) {
	p := msgParser{name: "certificate", msg: msg}
	body, err := p.body(typeCertificate)
	if err != nil {
		return nil, nil, err
	}
	var list cryptobyte.String
	if !body.ReadUint24LengthPrefixed(&list) || !body.Empty() {
		return nil, nil, p.fail(p.msg[4:], "certificate_list")
	}
	var ders [][]byte
	for !list.Empty() {
		var der cryptobyte.String
		at := list
		if !list.ReadUint24LengthPrefixed(&der) || der.Empty() {
			return nil, nil, p.fail(at, "ASN.1Cert")
		}
		ders = append(ders, der)
	}
	var errs []error
	if len(ders) > maxChainLen {
		errs = append(errs, fmt.Errorf("%d certificates, only the first %d parsed", len(ders), maxChainLen))
	}
	for i, der := range ders[:min(len(ders), maxChainLen)] {
		// Clone: the Certificate keeps slices of its input, and msg may
		// be the caller's read buffer.
		cert, err := x509.ParseCertificate(append([]byte(nil), der...))
		if err != nil {
			errs = append(errs, fmt.Errorf("certificate %d of %d (%d bytes): %w", i, len(ders), len(der), err))
			continue
		}
		certs = append(certs, cert)
	}
	return certs, errors.Join(errs...), nil
}

// parseServerKeyExchange returns the key-exchange group a TLS 1.2-and-earlier
// ServerKeyExchange announces: the named curve for (EC)DHE over elliptic
// curves, "DHE <bits>-bit" for finite-field DHE, "RSA <bits>-bit" for an
// export suite's temporary key. The layout depends on the negotiated suite
// (RFC 8422 section 5.4, RFC 5246 section 7.4.3, RFC 4279 section 3); ""
// means a suite whose parameters this package does not decode.
func parseServerKeyExchange(msg []byte, suite uint16) (string, error) {
	p := msgParser{name: "server_key_exchange", msg: msg}
	body, err := p.body(typeServerKeyExchange)
	if err != nil {
		return "", err
	}
	kx, pskHint := cipherKeyExchange(suite)
	if pskHint && kx != "" {
		var hint cryptobyte.String
		at := body
		if !body.ReadUint16LengthPrefixed(&hint) {
			return "", p.fail(at, "psk_identity_hint")
		}
	}
	switch kx {
	case "ecdhe":
		var curveType uint8
		at := body
		if !body.ReadUint8(&curveType) {
			return "", p.fail(at, "ECCurveType")
		}
		switch curveType {
		case 1:
			return "explicit_prime", nil
		case 2:
			return "explicit_char2", nil
		case 3:
			var group uint16
			if !body.ReadUint16(&group) {
				return "", p.fail(body, "named_curve")
			}
			return GroupName(group), nil
		}
		return "", p.fail(at, fmt.Sprintf("ECCurveType %d", curveType))
	case "dhe", "rsa_export":
		// dh_p and rsa_modulus both lead the parameters.
		var modulus cryptobyte.String
		at := body
		if !body.ReadUint16LengthPrefixed(&modulus) || modulus.Empty() {
			return "", p.fail(at, "modulus")
		}
		bits := new(big.Int).SetBytes(modulus).BitLen()
		if kx == "dhe" {
			return fmt.Sprintf("DHE %d-bit", bits), nil
		}
		return fmt.Sprintf("RSA %d-bit", bits), nil
	}
	return "", nil
}

// parseCertificateStatus reports whether a CertificateStatus message
// (RFC 6066 section 8) carries a non-empty OCSP response.
func parseCertificateStatus(msg []byte) (bool, error) {
	p := msgParser{name: "certificate_status", msg: msg}
	body, err := p.body(typeCertificateStatus)
	if err != nil {
		return false, err
	}
	var statusType uint8
	var resp cryptobyte.String
	if !body.ReadUint8(&statusType) || statusType != 1 {
		return false, p.fail(p.msg[4:], "status_type")
	}
	if !body.ReadUint24LengthPrefixed(&resp) || !body.Empty() {
		return false, p.fail(p.msg[5:], "OCSPResponse")
	}
	return !resp.Empty(), nil
}
