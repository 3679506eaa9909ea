package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// TestATSThroughProxy sends a real client through the proxy to servers
// with one weak setting each; the event must name that violation.
func TestATSThroughProxy(t *testing.T) {
	h := startProxyWith(t, nil, Options{Checker: ats.Checker{Policy: ats.DefaultPolicy()}})
	past := time.Now().Add(-48 * time.Hour)
	for _, tc := range []struct {
		name     string
		leaf     testpki.LeafOpts
		server   *tls.Config
		client   *tls.Config
		rules    []string
		detail   string
		complian string
	}{
		{name: "compliant", leaf: testpki.LeafOpts{Key: testpki.ECDSA256}, complian: ats.Yes},
		{name: "tls1.0", leaf: testpki.LeafOpts{Key: testpki.ECDSA256}, server: &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
			client: &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}, rules: []string{ats.RuleMinTLSVersion}, detail: "TLS 1.0"},
		{name: "tls1.1", leaf: testpki.LeafOpts{Key: testpki.ECDSA256}, server: &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11},
			client: &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}, rules: []string{ats.RuleMinTLSVersion}, detail: "TLS 1.1"},
		{name: "rsa key exchange", leaf: testpki.LeafOpts{Key: testpki.RSA2048}, server: &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}},
			client: &tls.Config{CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}, rules: []string{ats.RuleForwardSecrecy}, detail: "TLS_RSA_WITH_AES_128_GCM_SHA256"},
		{name: "rsa 1024 leaf", leaf: testpki.LeafOpts{Key: testpki.RSA1024}, rules: []string{ats.RuleCertKeySize}, detail: "1024"},
		{name: "sha1 leaf", leaf: testpki.LeafOpts{Key: testpki.ECDSA256, SigAlg: x509.ECDSAWithSHA1}, rules: []string{ats.RuleCertSignatureHash}, detail: "SHA1"},
		{name: "expired", leaf: testpki.LeafOpts{Key: testpki.ECDSA256, NotBefore: past, NotAfter: past.Add(time.Hour)}, rules: []string{ats.RuleCertTrust}, detail: "expired"},
		{name: "self-signed", leaf: testpki.LeafOpts{Key: testpki.ECDSA256, SelfSigned: true}, rules: []string{ats.RuleCertTrust}, detail: "self"},
		{name: "wrong name", leaf: testpki.LeafOpts{Key: testpki.ECDSA256, DNSNames: []string{"other.example"}, IPs: []net.IP{}}, rules: []string{ats.RuleCertTrust}, detail: "hostname"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{}
			if tc.server != nil {
				cfg = tc.server.Clone()
			}
			cfg.Certificates = []tls.Certificate{h.ca.Leaf(t, tc.leaf)}
			srv := testpki.StartTLS(t, cfg, nil)
			ccfg := &tls.Config{}
			if tc.client != nil {
				ccfg = tc.client.Clone()
			}
			ccfg.ServerName, ccfg.InsecureSkipVerify = "localhost", true // the client lets it through; the proxy judges
			h.tlsThrough(srv.Addr, ccfg)
			ev := h.event()
			a := ev.ATS
			if a == nil {
				t.Fatal("no ats verdict")
			}
			var got []string
			var details []string
			for _, v := range a.Violations {
				got = append(got, v.Rule)
				details = append(details, v.Detail)
			}
			if !slices.Equal(got, tc.rules) {
				t.Errorf("violations %v, want exactly %v (unknown: %v)", a.Violations, tc.rules, a.Unknown)
			}
			if tc.detail != "" && !strings.Contains(strings.Join(details, " "), tc.detail) {
				t.Errorf("details %q should mention %q", details, tc.detail)
			}
			if tc.complian != "" && a.Compliant != tc.complian {
				t.Errorf("compliant = %s (%v %v)", a.Compliant, a.Violations, a.Unknown)
			}
			if len(a.Unknown) != 0 {
				t.Errorf("unknown facts: %v", a.Unknown)
			}
			_ = event.KindTunnel
		})
	}
}
