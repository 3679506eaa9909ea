package tlsinfo

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"TLS 1.3", VersionName(0x0304), "TLS 1.3"},
		{"TLS 1.0", VersionName(0x0301), "TLS 1.0"},
		{"SSL 3.0", VersionName(0x0300), "SSL 3.0"},
		{"DTLS version", VersionName(0xfefd), "0xfefd"},
		{"GREASE version", VersionName(0x7a7a), "GREASE"},
		{"TLS 1.3 suite", CipherSuiteName(0x1303), "TLS_CHACHA20_POLY1305_SHA256"},
		{"ECDHE suite", CipherSuiteName(0xc02f), "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"},
		{"ChaCha suite", CipherSuiteName(0xcca9), "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"},
		{"3DES", CipherSuiteName(0x000a), "TLS_RSA_WITH_3DES_EDE_CBC_SHA"},
		{"RC4", CipherSuiteName(0x0005), "TLS_RSA_WITH_RC4_128_SHA"},
		{"NULL", CipherSuiteName(0x0000), "TLS_NULL_WITH_NULL_NULL"},
		{"EXPORT", CipherSuiteName(0x0003), "TLS_RSA_EXPORT_WITH_RC4_40_MD5"},
		{"CAMELLIA", CipherSuiteName(0x0088), "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA"},
		{"renegotiation SCSV", CipherSuiteName(0x00ff), "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"},
		{"fallback SCSV", CipherSuiteName(0x5600), "TLS_FALLBACK_SCSV"},
		{"unknown suite", CipherSuiteName(0x1234), "0x1234"},
		{"GREASE suite", CipherSuiteName(0xdada), "GREASE"},
		{"x25519", GroupName(29), "x25519"},
		{"secp256r1", GroupName(23), "secp256r1"},
		{"X25519MLKEM768", GroupName(0x11ec), "X25519MLKEM768"},
		{"ffdhe2048", GroupName(0x0100), "ffdhe2048"},
		{"GREASE group", GroupName(0x2a2a), "GREASE"},
		{"sigalg", SignatureSchemeName(0x0804), "rsa_pss_rsae_sha256"},
		{"ed25519", SignatureSchemeName(0x0807), "ed25519"},
		{"SNI", ExtensionName(0), "server_name"},
		{"ECH", ExtensionName(0xfe0d), "encrypted_client_hello"},
		{"unknown extension", ExtensionName(0xabcd), "0xabcd"},
		{"point format", ECPointFormatName(0), "uncompressed"},
		{"alert", formatAlert(2, 40), "fatal handshake_failure (40)"},
		{"warning alert", formatAlert(1, 0), "warning close_notify (0)"},
		{"odd alert", formatAlert(9, 250), "level(9) unknown (250)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestIsGREASE(t *testing.T) {
	n := 0
	for v := range 1 << 16 {
		if IsGREASE(uint16(v)) {
			n++
			if v&0x0f0f != 0x0a0a || v>>8 != v&0xff {
				t.Errorf("0x%04x reported as GREASE", v)
			}
		}
	}
	if n != 16 {
		t.Errorf("%d GREASE values, want the 16 of RFC 8701", n)
	}
}

// TestCipherSuiteTable checks the table's size, that names look like IANA
// names, and that it agrees with crypto/tls on every suite Go knows.
func TestCipherSuiteTable(t *testing.T) {
	if len(cipherSuiteNames) < 120 {
		t.Errorf("%d cipher suites named, want at least 120", len(cipherSuiteNames))
	}
	for id, name := range cipherSuiteNames {
		if !strings.HasPrefix(name, "TLS_") {
			t.Errorf("0x%04x: %q is not an IANA-style name", id, name)
		}
	}
	for _, list := range [][]*tls.CipherSuite{tls.CipherSuites(), tls.InsecureCipherSuites()} {
		for _, s := range list {
			if got := CipherSuiteName(s.ID); got != s.Name {
				t.Errorf("0x%04x: %s, crypto/tls says %s", s.ID, got, s.Name)
			}
		}
	}
	for _, id := range []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521, tls.X25519MLKEM768} {
		if GroupName(uint16(id)) == unknownName(uint16(id)) {
			t.Errorf("group %v (0x%04x) unnamed", id, uint16(id))
		}
	}
}

func TestCipherKeyExchange(t *testing.T) {
	tests := []struct {
		suite uint16
		kx    string
		psk   bool
	}{
		{0xc02f, "ecdhe", false},
		{0x009e, "dhe", false},
		{0xc035, "ecdhe", true},
		{0x0090, "dhe", true},
		{0x0003, "rsa_export", false},
		{0x002f, "", false},
		{0x1301, "", false},
	}
	for _, tt := range tests {
		if kx, psk := cipherKeyExchange(tt.suite); kx != tt.kx || psk != tt.psk {
			t.Errorf("%s: %q/%v, want %q/%v", CipherSuiteName(tt.suite), kx, psk, tt.kx, tt.psk)
		}
	}
}
