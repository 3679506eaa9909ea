package tlsinfo

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"

	"github.com/inspectproxy/inspectproxy/event"
)

// JA3 returns the JA3 string of a ClientHello and its MD5 (salesforce/ja3):
// "SSLVersion,Ciphers,Extensions,EllipticCurves,ECPointFormats", decimal
// values in wire order joined by "-", GREASE values left out, empty fields
// kept empty.
func JA3(ch *event.ClientHelloRaw) (ja3, hash string) {
	b := make([]byte, 0, 256)
	b = strconv.AppendUint(b, uint64(ch.LegacyVersion), 10)
	b = append(b, ',')
	b = appendDecimals(b, ch.CipherSuites)
	b = append(b, ',')
	b = appendDecimals(b, ch.Extensions)
	b = append(b, ',')
	b = appendDecimals(b, ch.SupportedGroups)
	b = append(b, ',')
	for i, f := range ch.ECPointFormats {
		if i > 0 {
			b = append(b, '-')
		}
		b = strconv.AppendUint(b, uint64(f), 10)
	}
	return string(b), md5Hex(b)
}

// JA3S returns the JA3S string of a ServerHello and its MD5:
// "SSLVersion,Cipher,Extensions" with the ServerHello's legacy_version.
func JA3S(sh *event.ServerHelloRaw) (ja3s, hash string) {
	b := make([]byte, 0, 64)
	b = strconv.AppendUint(b, uint64(sh.LegacyVersion), 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(sh.CipherSuite), 10)
	b = append(b, ',')
	b = appendDecimals(b, sh.Extensions)
	return string(b), md5Hex(b)
}

func appendDecimals(b []byte, vals []uint16) []byte {
	first := true
	for _, v := range vals {
		if IsGREASE(v) {
			continue
		}
		if !first {
			b = append(b, '-')
		}
		first = false
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	return b
}

func md5Hex(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// JA4 returns the JA4 fingerprint (FoxIO, BSD-3-Clause) of a ClientHello
// sent over TCP, e.g. "t13d1516h2_8daaf6152771_e5627efa2ab1".
func JA4(ch *event.ClientHelloRaw) string {
	a, ciphers, exts := ja4Parts(ch)
	return a + "_" + ja4Hash(ciphers) + "_" + ja4Hash(exts)
}

// JA4R returns the raw, unhashed JA4 ("JA4_r"): the sorted lists that JA4
// hashes, for comparing fingerprints field by field.
func JA4R(ch *event.ClientHelloRaw) string {
	a, ciphers, exts := ja4Parts(ch)
	return a + "_" + ciphers + "_" + exts
}

// ja4Parts builds ja4_a and the strings that ja4_b and ja4_c hash.
func ja4Parts(ch *event.ClientHelloRaw) (a, ciphers, exts string) {
	suites := withoutGREASE(ch.CipherSuites, false)
	// SNI and ALPN are already in ja4_a; leaving them out of ja4_c keeps
	// it stable across destinations.
	sorted := withoutGREASE(ch.Extensions, true)
	nExt := len(withoutGREASE(ch.Extensions, false))
	sni := "i"
	if slices.Contains(ch.Extensions, extServerName) {
		sni = "d"
	}
	a = "t" + ja4Version(ch) + sni + twoDigits(len(suites)) + twoDigits(nExt) + ja4ALPN(ch.ALPN)

	// Fixed-width lowercase hex sorts like the numbers.
	slices.Sort(suites)
	slices.Sort(sorted)
	ciphers = joinHex(suites)
	exts = joinHex(sorted)
	if sigs := withoutGREASE(ch.SignatureAlgorithms, false); len(sigs) > 0 && exts != "" {
		exts += "_" + joinHex(sigs)
	}
	return a, ciphers, exts
}

// withoutGREASE copies vals without GREASE values, and optionally without
// the SNI and ALPN extensions.
func withoutGREASE(vals []uint16, dropSNIALPN bool) []uint16 {
	out := make([]uint16, 0, len(vals))
	for _, v := range vals {
		if IsGREASE(v) || dropSNIALPN && (v == extServerName || v == extALPN) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// joinHex renders values as comma-separated 4-digit lowercase hex.
func joinHex(vals []uint16) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 0, len(vals)*5)
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, digits[v>>12], digits[v>>8&0xf], digits[v>>4&0xf], digits[v&0xf])
	}
	return string(b)
}

// ja4Hash is the first 12 hex digits of SHA-256, or twelve zeros for an
// empty list so that "nothing" reads as such.
func ja4Hash(s string) string {
	if s == "" {
		return "000000000000"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

func twoDigits(n int) string {
	n = min(n, 99)
	return string([]byte{byte('0' + n/10), byte('0' + n%10)})
}

// ja4Version is the highest non-GREASE supported_versions value, else the
// legacy_version.
func ja4Version(ch *event.ClientHelloRaw) string {
	v := uint16(0)
	for _, sv := range ch.SupportedVersions {
		if !IsGREASE(sv) {
			v = max(v, sv)
		}
	}
	if v == 0 {
		v = ch.LegacyVersion
	}
	switch v {
	case VersionTLS13:
		return "13"
	case VersionTLS12:
		return "12"
	case VersionTLS11:
		return "11"
	case VersionTLS10:
		return "10"
	case VersionSSL30:
		return "s3"
	case 0x0200, 0x0002:
		return "s2"
	case 0x0100:
		return "s1"
	case 0xfeff:
		return "d1"
	case 0xfefd:
		return "d2"
	case 0xfefc:
		return "d3"
	}
	return "00"
}

// ja4ALPN is the first and last character of the first ALPN value, or the
// first and last hex digit of the value when either end is not an ASCII
// letter or digit; "00" without one.
func ja4ALPN(alpn []string) string {
	if len(alpn) == 0 || alpn[0] == "" {
		return "00"
	}
	v := alpn[0]
	first, last := v[0], v[len(v)-1]
	if isAlnum(first) && isAlnum(last) {
		return string([]byte{first, last})
	}
	h := hex.EncodeToString([]byte(v))
	return string([]byte{h[0], h[len(h)-1]})
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
