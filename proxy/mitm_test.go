package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/ca"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// mitmProxy starts a proxy decrypting every tunnel with a fresh CA and
// returns a client that trusts that CA only.
func mitmProxy(t *testing.T) (*harness, *http.Client, *ca.CA) {
	t.Helper()
	h, c := mitmProxyWith(t, nil, Options{})
	pool := x509.NewCertPool()
	pool.AddCert(c.Certificate())
	pu, _ := url.Parse("http://" + h.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return h, &http.Client{Transport: tr}, c
}

func TestMITMRoundTrip(t *testing.T) {
	h, client, mca := mitmProxy(t)
	caPool := x509.NewCertPool()
	caPool.AddCert(mca.Certificate())
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "decrypted %s", r.URL.Path)
	}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{h.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256})}}
	up.StartTLS()
	defer up.Close()
	target := strings.Replace(up.URL, "127.0.0.1", "localhost", 1)
	for _, p := range []string{"/one", "/two"} {
		resp, b := get(t, client, target+p)
		if b != "decrypted "+p {
			t.Fatalf("body %q", b)
		}
		// The leaf the proxy showed is its own, for the name asked, and
		// passes the project's own ATS checks as a device would run them.
		leaf := resp.TLS.PeerCertificates[0]
		if leaf.VerifyHostname("localhost") != nil || leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("issued leaf: %v %v", leaf.DNSNames, leaf.SignatureAlgorithm)
		}
		if a := issuedLeafATS(t, resp.TLS, caPool); a.Compliant != ats.Yes {
			t.Errorf("issued leaf fails ATS: %+v %+v", a.Violations, a.Unknown)
		}
	}
	client.CloseIdleConnections()
	ev := h.event()
	if ev.Kind != event.KindMITM || len(ev.HTTP) != 2 || len(ev.Upstreams) != 1 {
		t.Fatalf("kind=%s http=%d upstreams=%d err=%q", ev.Kind, len(ev.HTTP), len(ev.Upstreams), ev.Error)
	}
	if ev.TLS == nil || ev.TLS.ClientHello == nil || ev.TLS.JA4 == "" || ev.TLS.SNI != "localhost" || ev.TLS.ChainSource != event.ChainMITM || ev.TLS.Version != "TLS 1.3" {
		t.Errorf("tls should be the server's handshake with the client's hello: %+v", ev.TLS)
	}
	ut := ev.Upstreams[0].TLS
	if ut == nil || ut.ChainSource != event.ChainMITM || ut.Verified == nil || !*ut.Verified || ut.Version != "TLS 1.3" || len(ut.Chain) != 2 || ut.HandshakeMS == nil || ut.OCSPStapled == nil {
		t.Errorf("upstream tls %+v", ut)
	}
	if !ev.HTTP[1].Reused || ev.HTTP[0].UpstreamID != 1 || ev.HTTP[0].Status != 200 || ev.HTTP[0].WaitMS == nil {
		t.Errorf("requests %+v", ev.HTTP)
	}
	// A second client connection resumes the proxy's upstream session.
	client.CloseIdleConnections()
	get(t, client, target+"/three")
	client.CloseIdleConnections()
	if ev := h.event(); ev.TLS == nil || !ev.TLS.Resumed || ev.TLS.Verified == nil || !*ev.TLS.Verified {
		t.Errorf("second connection's upstream tls %+v", ev.TLS)
	}
}

func TestMITMUpstreamNotTrusted(t *testing.T) {
	h, client, _ := mitmProxy(t)
	other := testpki.NewCA(t, "not trusted by the proxy")
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{other.Leaf(t, testpki.LeafOpts{})}}
	up.StartTLS()
	defer up.Close()
	resp, body := get(t, client, strings.Replace(up.URL, "127.0.0.1", "localhost", 1))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "unknown") {
		t.Errorf("status %d body %q, want 502 naming the reason", resp.StatusCode, body)
	}
	client.CloseIdleConnections()
	ev := h.event()
	if ev.Error == "" || len(ev.Upstreams) != 1 || ev.Upstreams[0].TLS == nil || ev.Upstreams[0].TLS.VerifyErrorKind != "unknown_authority" {
		t.Errorf("error=%q upstreams=%+v", ev.Error, ev.Upstreams)
	}
}

// issuedLeafATS judges the client side of a MITM handshake (the proxy's
// own certificate) by the ATS rules, trusting the proxy's CA as a device
// with the CA installed does.
func issuedLeafATS(t *testing.T, st *tls.ConnectionState, roots *x509.CertPool) *event.ATS {
	t.Helper()
	tl := tlsinfo.StateEvent(*st)
	tlsinfo.SetVerdict(tl, tlsinfo.Verify(st.PeerCertificates, "localhost", roots, time.Now()))
	return ats.Evaluate(&event.Event{Kind: event.KindTunnel, Target: "localhost:443", TLS: tl}, ats.DefaultPolicy())
}
