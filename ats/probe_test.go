package ats

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// weakServer is a loopback TLS server with one weak setting.
type weakServer struct {
	name string
	leaf testpki.LeafOpts
	cfg  func(*tls.Config)
	// pattern is the expected PASS (P) / FAIL (F) of the 16 nscurl
	// configurations, in order: default, arbitrary loads, TLSv1.3..1.0,
	// PFS off, PFS off + HTTP, TLSv1.3..1.0 with PFS off, the same + HTTP.
	pattern string
	// reason is a substring of the default configuration's FAIL reason.
	reason string
	// rules are the rules a real handshake breaks under default ATS.
	rules string
}

var weakServers = []weakServer{
	{name: "good", pattern: "PP PPPP PP PPPP PPPP", rules: ""},
	{name: "ECDSA P-256 leaf", leaf: testpki.LeafOpts{Key: testpki.ECDSA256}, pattern: "PP PPPP PP PPPP PPPP", rules: ""},
	{name: "TLS 1.0 only", cfg: only(tls.VersionTLS10), pattern: "FP FFFP FF FFFP FFFP",
		reason: "handshake: ", rules: "ats.min_tls_version"},
	{name: "TLS 1.1 only", cfg: only(tls.VersionTLS11), pattern: "FP FFPP FF FFPP FFPP",
		reason: "handshake: ", rules: "ats.min_tls_version"},
	{name: "TLS_RSA only", cfg: func(c *tls.Config) {
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_CBC_SHA}
	}, pattern: "FP FFFF PP FPPP FPPP", reason: "handshake: ", rules: "ats.forward_secrecy"},
	{name: "RSA 1024 leaf", leaf: testpki.LeafOpts{Key: testpki.RSA1024}, pattern: "FF FFFF FF FFFF FFFF",
		reason: "ats.cert_key_size: leaf CN=localhost has a 1024-bit RSA key", rules: "ats.cert_key_size"},
	{name: "SHA-1 leaf", leaf: testpki.LeafOpts{SigAlg: x509.ECDSAWithSHA1}, pattern: "FF FFFF FF FFFF FFFF",
		reason: "ats.cert_signature_hash: leaf CN=localhost signed with ECDSA-SHA1", rules: "ats.cert_signature_hash"},
	{name: "expired", leaf: testpki.LeafOpts{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}, pattern: "FF FFFF FF FFFF FFFF",
		reason: "ats.cert_trust: expired", rules: "ats.cert_trust"},
	{name: "self-signed", leaf: testpki.LeafOpts{SelfSigned: true}, pattern: "FF FFFF FF FFFF FFFF",
		reason: "ats.cert_trust: self_signed", rules: "ats.cert_trust"},
	{name: "wrong name", leaf: testpki.LeafOpts{DNSNames: []string{"other.example"}, IPs: []net.IP{net.IPv4(192, 0, 2, 1)}}, pattern: "FF FFFF FF FFFF FFFF",
		reason: "ats.cert_trust: hostname_mismatch", rules: "ats.cert_trust"},
	{name: "no serverAuth", leaf: testpki.LeafOpts{NoServerAuth: true}, pattern: "FF FFFF FF FFFF FFFF",
		reason: "no serverAuth extended key usage", rules: "ats.cert_trust"},
}

func only(v uint16) func(*tls.Config) {
	return func(c *tls.Config) { c.MinVersion, c.MaxVersion = v, v }
}

func (w weakServer) start(t *testing.T, ca *testpki.CA) *testpki.Server {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, w.leaf)}}
	if w.cfg != nil {
		w.cfg(cfg)
	}
	return testpki.StartTLS(t, cfg, func(*tls.Conn) {})
}

func pattern(rep *ProbeReport) string {
	var b strings.Builder
	for i, r := range rep.Results {
		if i == 2 || i == 6 || i == 8 || i == 12 {
			b.WriteByte(' ')
		}
		if r.Pass {
			b.WriteByte('P')
		} else {
			b.WriteByte('F')
		}
	}
	return b.String()
}

func TestProbe(t *testing.T) {
	ca := testpki.NewCA(t, "inspectproxy ATS test CA")
	for _, w := range weakServers {
		t.Run(w.name, func(t *testing.T) {
			srv := w.start(t, ca)
			rep, err := Probe(context.Background(), "https://"+srv.Addr, ProbeOptions{Timeout: 5 * time.Second, Roots: ca.Pool})
			if err != nil {
				t.Fatal(err)
			}
			if got := pattern(rep); got != w.pattern {
				for _, r := range rep.Results {
					t.Logf("%-60s pass=%v %s %s %s", r.Name, r.Pass, r.Version, r.Cipher, r.Reason)
				}
				t.Fatalf("pattern = %q, want %q", got, w.pattern)
			}
			if !strings.Contains(rep.Results[0].Reason, w.reason) {
				t.Errorf("default reason = %q, want it to contain %q", rep.Results[0].Reason, w.reason)
			}
			if len(rep.Chain) == 0 || rep.Trust == "" {
				t.Errorf("no chain summary: %+v", rep)
			}
			var text strings.Builder
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(text.String(), "Result : "); got != 16 {
				t.Errorf("text has %d results, want 16", got)
			}
		})
	}
}

// TestEvaluateRealHandshakes runs Evaluate on facts from real handshakes
// with the weak servers, as the proxy would record them.
func TestEvaluateRealHandshakes(t *testing.T) {
	ca := testpki.NewCA(t, "inspectproxy ATS test CA")
	permissive := clientConfig(Policy{Disabled: true}, "127.0.0.1")
	for _, w := range weakServers {
		t.Run(w.name, func(t *testing.T) {
			srv := w.start(t, ca)
			facts, err := handshake(context.Background(), srv.Addr, "127.0.0.1", permissive.Clone(), ProbeOptions{Timeout: 5 * time.Second, Roots: ca.Pool})
			if err != nil {
				t.Fatal(err)
			}
			got := Evaluate(&event.Event{Kind: event.KindTunnel, Target: srv.Addr, TLS: facts}, DefaultPolicy())
			if r := strings.Join(rules(got.Violations), ","); r != w.rules || len(got.Unknown) > 0 {
				t.Fatalf("rules = %q unknown = %+v, want %q\n%+v", r, got.Unknown, w.rules, got.Violations)
			}
		})
	}
}

func TestProbeOrderAndNames(t *testing.T) {
	var names []string
	for _, c := range probeConfigs("h") {
		names = append(names, c.name)
	}
	want := "ATS Default Connection|Allow All Loads|TLSv1.3|TLSv1.2|TLSv1.1|TLSv1.0|" +
		"Disabling Perfect Forward Secrecy|Disabling Perfect Forward Secrecy and Allowing Insecure HTTP|" +
		"TLSv1.3 with PFS disabled|TLSv1.2 with PFS disabled|TLSv1.1 with PFS disabled|TLSv1.0 with PFS disabled|" +
		"TLSv1.3 with PFS disabled and insecure HTTP allowed|TLSv1.2 with PFS disabled and insecure HTTP allowed|" +
		"TLSv1.1 with PFS disabled and insecure HTTP allowed|TLSv1.0 with PFS disabled and insecure HTTP allowed"
	if got := strings.Join(names, "|"); got != want {
		t.Errorf("names:\n got %s\nwant %s", got, want)
	}
	wantDict := `{
    NSExceptionDomains =     {
        "api.example.com" =         {
            NSExceptionAllowsInsecureHTTPLoads = true;
            NSExceptionMinimumTLSVersion = "TLSv1.1";
            NSExceptionRequiresForwardSecrecy = false;
        };
    };
}`
	if got := describeDict(probeConfigs("api.example.com")[14].dict); got != wantDict {
		t.Errorf("dictionary:\n%s\nwant\n%s", got, wantDict)
	}
	if got := describeDict(map[string]any{}); got != "{\n}" {
		t.Errorf("empty dictionary = %q", got)
	}
}

func TestProbeErrors(t *testing.T) {
	for _, u := range []string{"http://example.com/", "example.com", "https://", "ht tp://x"} {
		if _, err := Probe(context.Background(), u, ProbeOptions{}); !errors.Is(err, ErrProbeURL) {
			t.Errorf("%q: err = %v, want ErrProbeURL", u, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Probe(context.Background(), "https://"+addr, ProbeOptions{Timeout: time.Second}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("closed port: err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Probe(ctx, "https://"+addr, ProbeOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: err = %v", err)
	}
}
