package ats

import (
	"crypto/tls"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

var (
	now    = time.Now()
	tTrue  = true
	tFalse = false
)

// leafCert is a good leaf: RSA 2048, SHA-256, serverAuth, 90 days.
func leafCert(mods ...func(*event.Cert)) event.Cert {
	c := event.Cert{
		Subject: "CN=api.example.com", Issuer: "CN=Example CA", KeyType: "RSA", KeyBits: 2048,
		SignatureAlgorithm: "SHA256-RSA", ExtKeyUsage: []string{"serverAuth"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(89 * 24 * time.Hour),
	}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func rootCert() event.Cert {
	return event.Cert{Subject: "CN=Example CA", Issuer: "CN=Example CA", KeyType: "ECDSA", KeyBits: 256,
		SignatureAlgorithm: "ECDSA-SHA1", IsCA: true, SelfSigned: true,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(3650 * 24 * time.Hour)}
}

// tunnel is a TLS tunnel event; mods adjust its TLS facts.
func tunnel(target string, mods ...func(*event.TLS)) *event.Event {
	t := &event.TLS{Version: "TLS 1.2", VersionCode: tls.VersionTLS12, Cipher: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", CipherCode: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		Chain: []event.Cert{leafCert(), rootCert()}, ChainSource: event.ChainObserved, Verified: &tTrue}
	for _, m := range mods {
		m(t)
	}
	return &event.Event{Kind: event.KindTunnel, Target: target, TLS: t, TCP: connected()}
}

// connected is the TCP record of an upstream that connected: a real event
// that reached a server always has one (ATS judges only those).
func connected() *event.TCP {
	ms := 1.0
	return &event.TCP{ConnectMS: &ms, RemoteAddr: "192.0.2.1:443"}
}

func plainHTTP(urls ...string) *event.Event {
	ev := &event.Event{Kind: event.KindHTTP, Target: "www.example.com:80"}
	for _, u := range urls {
		ev.HTTP = append(ev.HTTP, event.HTTP{Method: "GET", URL: u})
	}
	return ev
}

// version and cipher set a negotiated value as the event has it: its
// number and, from tlsinfo's tables, its name (0: not negotiated).
func version(v uint16) func(*event.TLS) {
	return func(t *event.TLS) { t.VersionCode, t.Version = v, nameOr(v, tlsinfo.VersionName) }
}
func cipher(c uint16) func(*event.TLS) {
	return func(t *event.TLS) { t.CipherCode, t.Cipher = c, nameOr(c, tlsinfo.CipherSuiteName) }
}
func nameOr(v uint16, name func(uint16) string) string {
	if v == 0 {
		return ""
	}
	return name(v)
}
func noChain(t *event.TLS) { t.Chain, t.Verified = nil, nil }
func leaf(mods ...func(*event.Cert)) func(*event.TLS) {
	return func(t *event.TLS) { t.Chain[0] = leafCert(mods...) }
}
func untrusted(kind, msg string) func(*event.TLS) {
	return func(t *event.TLS) { t.Verified, t.VerifyErrorKind, t.VerifyError = &tFalse, kind, msg }
}

// verdict renders an ATS result as "compliant fail=[...] unknown=[...]".
func verdict(a *event.ATS) string {
	return a.Compliant + " fail=" + strings.Join(rules(a.Violations), ",") + " unknown=" + strings.Join(rules(a.Unknown), ",")
}

func TestEvaluate(t *testing.T) {
	def := DefaultPolicy()
	noPFS := def
	noPFS.RequireForwardSecrecy = false
	min13 := def
	min13.MinTLSVersion = tls.VersionTLS13
	insecure := def
	insecure.AllowInsecureHTTP = true
	off := Policy{Name: "off", Disabled: true}
	ct := def
	ct.RequireCT = true
	two, zero := 2, 0

	for _, tc := range []struct {
		name   string
		ev     *event.Event
		p      Policy
		want   string
		detail string // a substring of the first violation or unknown
	}{
		{"good TLS 1.2", tunnel("api.example.com:443"), def, "yes fail= unknown=", ""},
		{"good TLS 1.3", tunnel("api.example.com:443", version(tls.VersionTLS13), cipher(0x1303)), def, "yes fail= unknown=", ""},
		// ats.cleartext_http
		{"http request", plainHTTP("http://www.example.com/a"), def, "no fail=ats.cleartext_http unknown=", "GET http://www.example.com/a"},
		{"http two hosts", plainHTTP("http://a.example/", "http://b.example/", "http://a.example/2"), def, "no fail=ats.cleartext_http unknown=", "(and 1 more requests)"},
		{"http allowed", plainHTTP("http://www.example.com/a"), insecure, "yes fail= unknown=", ""},
		{"http no request", &event.Event{Kind: event.KindHTTP, Target: "www.example.com:80", Upstreams: []event.Upstream{{ID: 1, Target: "www.example.com:80", TCP: *connected()}}}, def, "no fail=ats.cleartext_http unknown=", "proxy connection to www.example.com:80"},
		{"tunnel port 80 no TLS", &event.Event{Kind: event.KindTunnel, Target: "ws.example.com:80", TLSAbsent: "not TLS", TCP: connected()}, def, "no fail=ats.cleartext_http unknown=", "without TLS (not TLS)"},
		{"tunnel other port no TLS", &event.Event{Kind: event.KindTunnel, Target: "chat.example.com:5222", TCP: connected()}, def, "unknown fail= unknown=ats.cleartext_http", "no TLS seen"},
		// ats.min_tls_version
		{"TLS 1.0", tunnel("old.example.com:443", version(tls.VersionTLS10), cipher(0xc013)), def, "no fail=ats.min_tls_version unknown=", "negotiated TLS 1.0, minimum is TLS 1.2"},
		{"TLS 1.1", tunnel("old.example.com:443", version(tls.VersionTLS11), cipher(0xc013)), def, "no fail=ats.min_tls_version unknown=", "TLS 1.1"},
		{"SSL 3.0", tunnel("old.example.com:443", version(tls.VersionSSL30), cipher(0xc013)), def, "no fail=ats.min_tls_version unknown=", "SSL 3.0"},
		{"TLS 1.2 under a TLS 1.3 minimum", tunnel("api.example.com:443"), min13, "no fail=ats.min_tls_version unknown=", "minimum is TLS 1.3"},
		{"handshake aborted", tunnel("api.example.com:443", version(0), cipher(0), noChain, func(t *event.TLS) { t.Alert = "handshake_failure" }), def,
			"unknown fail= unknown=ats.min_tls_version,ats.forward_secrecy,ats.cipher,ats.cert_key_size,ats.cert_signature_hash,ats.cert_trust", "alert handshake_failure"},
		{"unknown version", tunnel("api.example.com:443", version(0x7f1c)), def, "unknown fail= unknown=ats.min_tls_version", "0x7f1c"},
		// ats.forward_secrecy
		{"RSA key exchange", tunnel("api.example.com:443", cipher(0x009c)), def, "no fail=ats.forward_secrecy unknown=", "no forward secrecy"},
		{"RSA key exchange, PFS not required", tunnel("api.example.com:443", cipher(0x0035)), noPFS, "yes fail= unknown=", ""},
		{"legacy ECDHE CBC SHA256", tunnel("api.example.com:443", cipher(0xc027)), def, "yes fail= unknown=", ""},
		{"ECDHE CBC SHA", tunnel("api.example.com:443", cipher(0xc00a)), def, "yes fail= unknown=", ""},
		// ats.cipher
		{"3DES", tunnel("api.example.com:443", cipher(0x000a)), noPFS, "no fail=ats.cipher unknown=", "3DES"},
		{"ECDHE 3DES", tunnel("api.example.com:443", cipher(0xc012)), def, "no fail=ats.cipher unknown=", "3DES"},
		{"RC4", tunnel("api.example.com:443", cipher(0xc011)), def, "no fail=ats.cipher unknown=", "RC4"},
		{"NULL", tunnel("api.example.com:443", cipher(0x003b)), def, "no fail=ats.cipher unknown=", "NULL"},
		{"export", tunnel("api.example.com:443", cipher(0x0003)), def, "no fail=ats.cipher unknown=", "export"},
		{"Camellia CBC", tunnel("api.example.com:443", cipher(0x0041)), def, "no fail=ats.cipher unknown=", "CBC without AES"},
		{"DHE", tunnel("api.example.com:443", cipher(0x009e)), def, "no fail=ats.cipher unknown=", "finite-field DHE"},
		{"TLS 1.3 CCM", tunnel("api.example.com:443", version(tls.VersionTLS13), cipher(0x1304)), def, "no fail=ats.cipher unknown=", "AES-CCM"},
		{"unknown suite", tunnel("api.example.com:443", cipher(0x1234)), def, "no fail=ats.cipher unknown=", "unknown cipher suite"},
		// ats.cert_key_size
		{"RSA 1024 leaf", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.KeyBits = 1024 })), def, "no fail=ats.cert_key_size unknown=", "1024-bit RSA key, minimum 2048"},
		{"ECDSA 224 leaf", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.KeyType, c.KeyBits = "ECDSA", 224 })), def, "no fail=ats.cert_key_size unknown=", "224-bit ECDSA key, minimum 256"},
		{"ECDSA 224 leaf, PFS not required", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.KeyType, c.KeyBits = "ECDSA", 224 })), noPFS, "yes fail= unknown=", ""},
		{"ECDSA 256 leaf", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.KeyType, c.KeyBits = "ECDSA", 256 })), def, "yes fail= unknown=", ""},
		{"TLS 1.3 chain not seen", tunnel("api.example.com:443", version(tls.VersionTLS13), cipher(0x1301), noChain), def,
			"unknown fail= unknown=ats.cert_key_size,ats.cert_signature_hash,ats.cert_trust", "TLS 1.3 encrypts it"},
		{"resumed session", tunnel("api.example.com:443", noChain, func(t *event.TLS) { t.Resumed = true }), def,
			"unknown fail= unknown=ats.cert_key_size,ats.cert_signature_hash,ats.cert_trust", "session resumed"},
		// ats.cert_signature_hash
		{"SHA-1 leaf", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.SignatureAlgorithm = "SHA1-RSA" })), def, "no fail=ats.cert_signature_hash unknown=", "leaf CN=api.example.com signed with SHA1-RSA"},
		{"MD5 leaf", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.SignatureAlgorithm = "MD5-RSA" })), def, "no fail=ats.cert_signature_hash unknown=", "MD5-RSA"},
		{"SHA-1 intermediate", tunnel("api.example.com:443", func(t *event.TLS) {
			t.Chain = []event.Cert{leafCert(), {Subject: "CN=Intermediate", KeyType: "ECDSA", KeyBits: 256, SignatureAlgorithm: "ECDSA-SHA1", IsCA: true}, rootCert()}
		}), def, "no fail=ats.cert_signature_hash unknown=", "chain[1] CN=Intermediate signed with ECDSA-SHA1"},
		{"SHA-1 root is fine", tunnel("api.example.com:443"), def, "yes fail= unknown=", ""},
		// ats.cert_trust
		{"expired", tunnel("api.example.com:443", untrusted("expired", "x509: certificate has expired")), def, "no fail=ats.cert_trust unknown=", "expired: x509: certificate has expired"},
		{"self-signed", tunnel("api.example.com:443", untrusted("self_signed", "x509: certificate signed by unknown authority")), def, "no fail=ats.cert_trust unknown=", "self_signed"},
		{"unknown issuer", tunnel("api.example.com:443", untrusted("unknown_authority", "x509: certificate signed by unknown authority")), def, "no fail=ats.cert_trust unknown=", "unknown_authority"},
		{"wrong name", tunnel("api.example.com:443", untrusted("hostname_mismatch", "x509: certificate is valid for other.example, not api.example.com")), def, "no fail=ats.cert_trust unknown=", "hostname_mismatch"},
		{"not verified", tunnel("api.example.com:443", func(t *event.TLS) { t.Verified = nil }), def, "unknown fail= unknown=ats.cert_trust", "not verified"},
		{"no serverAuth EKU", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.ExtKeyUsage = nil })), def, "no fail=ats.cert_trust unknown=", "no serverAuth"},
		{"EKU spelled ServerAuth", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.ExtKeyUsage = []string{"ServerAuth"} })), def, "yes fail= unknown=", ""},
		{"validity over 825 days", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.NotAfter = c.NotBefore.Add(900 * 24 * time.Hour) })), def, "no fail=ats.cert_trust unknown=", "valid 900 days"},
		{"old long-lived cert without EKU", tunnel("api.example.com:443", leaf(func(c *event.Cert) {
			c.NotBefore, c.NotAfter, c.ExtKeyUsage = time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC), nil
		})), def, "yes fail= unknown=", ""},
		{"RSA 1024 intermediate", tunnel("api.example.com:443", func(t *event.TLS) {
			t.Chain = []event.Cert{leafCert(), {Subject: "CN=Intermediate", KeyType: "RSA", KeyBits: 1024, SignatureAlgorithm: "SHA256-RSA", IsCA: true}, rootCert()}
		}), def, "no fail=ats.cert_trust unknown=", "chain[1] CN=Intermediate: 1024-bit RSA key"},
		{"CT required, no SCTs", tunnel("api.example.com:443", func(t *event.TLS) { t.SCTs = &zero }), ct, "no fail=ats.cert_trust unknown=", "certificate transparency: 0 embedded and 0 delivered"},
		{"CT required, handshake SCTs not seen", tunnel("api.example.com:443"), ct, "unknown fail= unknown=ats.cert_trust", "SCTs sent in the handshake not seen"},
		{"CT required, two embedded", tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.SCTs = 2 })), ct, "yes fail= unknown=", ""},
		{"CT required, one embedded one delivered, 1 year", tunnel("api.example.com:443", leaf(func(c *event.Cert) {
			c.SCTs, c.NotAfter = 1, c.NotBefore.Add(365*24*time.Hour)
		}), func(t *event.TLS) { one := 1; t.SCTs = &one }), ct, "yes fail= unknown=", ""},
		{"CT required, two embedded, 1 year", tunnel("api.example.com:443", leaf(func(c *event.Cert) {
			c.SCTs, c.NotAfter = 2, c.NotBefore.Add(365*24*time.Hour)
		}), func(t *event.TLS) { t.SCTs = &zero }), ct, "no fail=ats.cert_trust unknown=", "2 embedded and 0 delivered"},
		{"CT required, two delivered", tunnel("api.example.com:443", func(t *event.TLS) { t.SCTs = &two }), ct, "yes fail= unknown=", ""},
		// ATS off: only trust is left.
		{"ATS off, weak everything but trusted", tunnel("api.example.com:443", version(tls.VersionTLS10), cipher(0x000a),
			leaf(func(c *event.Cert) { c.KeyType, c.KeyBits = "ECDSA", 224 })), off, "yes fail= unknown=", ""},
		{"ATS off, http", plainHTTP("http://www.example.com/"), off, "yes fail= unknown=", ""},
		{"ATS off, expired", tunnel("api.example.com:443", untrusted("expired", "x509: certificate has expired")), off, "no fail=ats.cert_trust unknown=", "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Evaluate(tc.ev, tc.p)
			if v := verdict(got); v != tc.want {
				t.Fatalf("verdict = %q, want %q\nviolations %+v\nunknown %+v", v, tc.want, got.Violations, got.Unknown)
			}
			if got.Policy != tc.p.Name {
				t.Errorf("policy = %q, want %q", got.Policy, tc.p.Name)
			}
			if tc.detail == "" {
				return
			}
			first := slices.Concat(got.Violations, got.Unknown)[0].Detail
			if !strings.Contains(first, tc.detail) {
				t.Errorf("detail %q does not contain %q", first, tc.detail)
			}
		})
	}
}

func TestEvaluateSplitsPlainHTTPByHost(t *testing.T) {
	got := Evaluate(plainHTTP("http://a.example/", "http://b.example/x", "http://a.example/2"), DefaultPolicy())
	if len(got.Violations) != 2 {
		t.Fatalf("violations = %+v, want one per host", got.Violations)
	}
	if d := got.Violations[1].Detail; d != "plain HTTP: GET http://b.example/x" {
		t.Errorf("second detail = %q", d)
	}
}

func TestRuleIDsDocumented(t *testing.T) {
	doc := docText(t)
	for _, id := range RuleIDs() {
		if !strings.Contains(doc, "| "+id+" ") {
			t.Errorf("rule %s is not in the doc.go rules table", id)
		}
	}
}

func docText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
