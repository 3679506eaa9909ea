package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/ca"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testca"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
)

// mitmProxyWith starts a decrypting proxy with cfg edited by edit; it
// returns the harness and the proxy's CA.
func mitmProxyWith(t *testing.T, edit func(*config.Config), o Options) (*harness, *ca.CA) {
	t.Helper()
	c, iss := testca.New(t)
	o.MITM = iss
	h := startProxyWith(t, func(cfg *config.Config) {
		cfg.MITM.Enabled = true
		if edit != nil {
			edit(cfg)
		}
	}, o)
	return h, c
}

// h2Server is an HTTPS server that speaks HTTP/2, with a leaf from the
// harness's test CA (which the proxy trusts) for localhost and alias.test.
func h2Server(t *testing.T, h *harness, handler http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{h.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256, DNSNames: []string{"localhost", "alias.test"}})}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
}

func caPEM(t *testing.T, c *ca.CA) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "mitm-ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMITMHTTP2: a client that offers h2 to a server that speaks it gets
// h2 from the proxy too, on one connection, several streams.
func TestMITMHTTP2(t *testing.T) {
	h, mca := mitmProxyWith(t, nil, Options{})
	target := h2Server(t, h, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
	})
	pool := x509.NewCertPool()
	pool.AddCert(mca.Certificate())
	pu, _ := url.Parse("http://" + h.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	cl := &http.Client{Transport: tr}
	get(t, cl, target+"/warm") // one connection, then concurrent streams on it
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := get(t, cl, fmt.Sprintf("%s/s%d", target, i))
			if resp.ProtoMajor != 2 || body != fmt.Sprintf("HTTP/2.0 /s%d", i) {
				t.Errorf("client proto %s, server saw %q", resp.Proto, body)
			}
		}()
	}
	wg.Wait()
	tr.CloseIdleConnections()
	ev := h.event()
	if ev.Kind != event.KindMITM || len(ev.HTTP) != 4 || len(ev.Upstreams) != 1 || ev.TLS == nil || ev.TLS.ALPN != "h2" {
		t.Fatalf("kind=%s http=%d upstreams=%d alpn=%v error=%q", ev.Kind, len(ev.HTTP), len(ev.Upstreams), ev.TLS, ev.Error)
	}
	reused := 0
	for _, x := range ev.HTTP {
		if x.Proto != "HTTP/2.0" || x.UpstreamID != 1 || x.Status != 200 {
			t.Errorf("request %+v", x)
		}
		if x.Reused {
			reused++
		}
	}
	if reused != 3 {
		t.Errorf("%d requests on a reused connection, want 3 (all streams after the first)", reused)
	}

	// curl --http2, as a user would run it.
	curl := testtool.Need(t, "curl")
	out, err := exec.Command(curl, "-sS", "--http2", "--noproxy", "", "-x", "http://"+h.addr, "--cacert", caPEM(t, mca),
		"-o", "/dev/null", "-w", "%{http_version}", target+"/curl").CombinedOutput()
	if err != nil || string(out) != "2" {
		t.Fatalf("curl --http2: %q %v", out, err)
	}
	if ev := h.event(); len(ev.HTTP) != 1 || ev.HTTP[0].Proto != "HTTP/2.0" {
		t.Errorf("curl's event http %+v", ev.HTTP)
	}
}

// TestMITMSNIDecides: the route and the leaf follow the SNI; the proxy
// connects to the CONNECT target whatever the inner Host says, and the
// event records both names.
func TestMITMSNIDecides(t *testing.T) {
	h, mca := mitmProxyWith(t, func(c *config.Config) {
		c.MITM.Enabled = false
		c.MITM.Hosts = []string{"alias.test"}
	}, Options{})
	target := h2Server(t, h, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "the CONNECT target") })
	other := h2Server(t, h, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "the Host header's server") })
	u, _ := url.Parse(target)
	ou, _ := url.Parse(other)
	connectTo := "127.0.0.1:" + u.Port()
	pool := x509.NewCertPool()
	pool.AddCert(mca.Certificate())
	raw := h.connect(connectTo)
	c := tls.Client(raw, &tls.Config{ServerName: "alias.test", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake for alias.test: %v", err)
	}
	if got := c.ConnectionState().PeerCertificates[0]; got.VerifyHostname("alias.test") != nil || got.Issuer.CommonName != mca.Certificate().Subject.CommonName {
		t.Errorf("leaf %v issued by %v, want the proxy's leaf for alias.test", got.DNSNames, got.Issuer)
	}
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n", ou.Port())
	b, _ := io.ReadAll(c)
	if !strings.Contains(string(b), "the CONNECT target") {
		t.Errorf("response %q: the request must go where the stream was connected", b)
	}
	c.Close()
	ev := h.event()
	if ev.Kind != event.KindMITM || !ev.SNIMismatch || ev.Target != connectTo || ev.TLS == nil || ev.TLS.SNI != "alias.test" {
		t.Errorf("kind=%s sni_mismatch=%v target=%s tls.sni=%v", ev.Kind, ev.SNIMismatch, ev.Target, ev.TLS)
	}
	if len(ev.HTTP) != 1 || !strings.Contains(ev.HTTP[0].URL, "127.0.0.1:"+ou.Port()) {
		t.Errorf("http %+v: the URL records the Host the client sent", ev.HTTP)
	}
	// The same CONNECT with an SNI the policy does not select passes through.
	raw = h.connect(connectTo)
	c = tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: h.ca.Pool})
	if err := c.Handshake(); err != nil {
		t.Fatalf("passthrough handshake: %v", err)
	}
	c.Close()
	if ev := h.event(); ev.Kind != event.KindTunnel {
		t.Errorf("SNI localhost: kind %s, want tunnel", ev.Kind)
	}
}

// pinnedClient is a client that pins the SPKI of want, as apps do: any
// other certificate is refused (Go then sends bad_certificate).
func pinnedClient(want *x509.Certificate) *tls.Config {
	pin := sha256.Sum256(want.RawSubjectPublicKeyInfo)
	return &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // the pin is the check
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if sha256.Sum256(leaf.RawSubjectPublicKeyInfo) != pin {
				return errors.New("pin mismatch")
			}
			return nil
		},
	}
}

// TestMITMPinningAutoPassthrough: a client that refuses the proxy's leaf
// is recorded as such; with mitm.auto_passthrough the next connection to
// that host passes through and works.
func TestMITMPinningAutoPassthrough(t *testing.T) {
	h, mca := mitmProxyWith(t, func(c *config.Config) { c.MITM.AutoPassthrough = true }, Options{})
	leaf := h.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}}
	srv.StartTLS()
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "https://")
	_, port, _ := net.SplitHostPort(target)

	// A client that trusts the proxy's CA and succeeds elsewhere first: a
	// later refusal from it is likely pinning.
	pool := x509.NewCertPool()
	pool.AddCert(mca.Certificate())
	raw := h.connect("localhost:" + port)
	c := tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: pool})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	h.event()

	pinned := pinnedClient(leaf.Leaf)
	pinned.ServerName = "127.0.0.1"
	raw = h.connect(target)
	c = tls.Client(raw, pinned)
	if err := c.Handshake(); err == nil {
		t.Fatal("the pinning client accepted the proxy's leaf")
	}
	c.Close()
	ev := h.event()
	if cr := ev.TLS.ClientRejected; cr == nil || cr.Likely != "pinning" || cr.AlertCode == nil || *cr.AlertCode != 42 {
		t.Fatalf("client_rejected %+v error %q: want likely pinning after bad_certificate (42)", ev.TLS.ClientRejected, ev.Error)
	}
	// Now the host goes through untouched, and the pin holds.
	raw = h.connect(target)
	c = tls.Client(raw, pinned)
	if err := c.Handshake(); err != nil {
		t.Fatalf("after auto passthrough: %v", err)
	}
	c.Close()
	if ev := h.event(); ev.Kind != event.KindTunnel || !strings.Contains(ev.MITMSkipped, "mitm.auto_passthrough") {
		t.Errorf("kind=%s mitm_skipped=%q", ev.Kind, ev.MITMSkipped)
	}
}

// TestMITMUntrustedCA: curl without the proxy's CA refuses its leaf; the
// event says so (a client that never accepted a leaf: untrusted_ca).
func TestMITMUntrustedCA(t *testing.T) {
	curl := testtool.Need(t, "curl")
	h, _ := mitmProxyWith(t, nil, Options{})
	target := h2Server(t, h, func(w http.ResponseWriter, r *http.Request) {})
	out, err := exec.Command(curl, "-sS", "--noproxy", "", "-x", "http://"+h.addr, target+"/").CombinedOutput()
	if err == nil {
		t.Fatalf("curl accepted a leaf from a CA it does not have: %s", out)
	}
	ev := h.event()
	if ev.TLS == nil || ev.TLS.ClientRejected == nil || ev.TLS.ClientRejected.Likely != "untrusted_ca" || ev.TLS.Failure == nil || ev.TLS.Failure.By != event.SideClient {
		t.Errorf("tls %+v error %q", ev.TLS, ev.Error)
	}
}

// TestMITMUpstreamSilent: a server that accepts TCP and never speaks TLS
// holds nothing past the handshake timeout; the client gets a 502 and the
// event says why, and shutdown is not held up.
func TestMITMUpstreamSilent(t *testing.T) {
	h, mca := mitmProxyWith(t, func(c *config.Config) { c.Limits.HandshakeTimeout = 300 * time.Millisecond }, Options{})
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	pool := x509.NewCertPool()
	pool.AddCert(mca.Certificate())
	pu, _ := url.Parse("http://" + h.addr)
	cl := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, body := get(t, cl, "https://"+addr+"/")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "deadline") {
		t.Errorf("status %d %q, want 502 naming the timeout", resp.StatusCode, body)
	}
	cl.CloseIdleConnections()
	ev := h.event()
	u := ev.Upstreams[0]
	if u.TLS == nil || u.TLS.Failure == nil || u.TLS.Failure.How != "timeout" || u.TLS.Failure.By != event.SideProxy {
		t.Errorf("upstream tls %+v error %q", u.TLS, u.Error)
	}
}

// TestMITMIdleClient: every limit of a passthrough stream applies to a
// decrypted one: a client that completes the handshake and says nothing
// is closed after idle_timeout, one that sends nothing at all after
// hello_timeout (then relayed) and idle_timeout.
func TestMITMIdleClient(t *testing.T) {
	h, mca := mitmProxyWith(t, func(c *config.Config) {
		c.Limits.IdleTimeout = 300 * time.Millisecond
		c.Limits.HelloTimeout = 200 * time.Millisecond
	}, Options{})
	target := h2Server(t, h, func(w http.ResponseWriter, r *http.Request) {})
	u, _ := url.Parse(target)
	pool := x509.NewCertPool()
	pool.AddCert(mca.Certificate())
	raw := h.connect(u.Host)
	c := tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: pool})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("idle decrypted client: read %v, want the proxy to close it", err)
	}
	c.Close()
	h.event()

	raw = h.connect(u.Host) // and then nothing
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("silent client: read %v, want the proxy to close it", err)
	}
	raw.Close()
	ev := h.event()
	if ev.Kind != event.KindTunnel || !strings.Contains(ev.MITMSkipped, "hello_timeout") || ev.TCP.Timeout != "idle" {
		t.Errorf("kind=%s mitm_skipped=%q timeout=%q", ev.Kind, ev.MITMSkipped, ev.TCP.Timeout)
	}
}

// TestMITMServerRefusesHandshake: a server that offers only a suite the
// proxy's leg does not offer ends the handshake with handshake_failure,
// which the event names.
func TestMITMServerRefusesHandshake(t *testing.T) {
	h, mca := mitmProxyWith(t, nil, Options{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{h.ca.Leaf(t, testpki.LeafOpts{})},
		MaxVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA},
	}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(mca.Certificate())
	pu, _ := url.Parse("http://" + h.addr)
	cl := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, _ := get(t, cl, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1))
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	cl.CloseIdleConnections()
	f := h.event().Upstreams[0].TLS.Failure
	if f == nil || f.By != event.SideServer || f.How != "alert" || f.AlertCode == nil || *f.AlertCode != 40 || f.Phase != "client_hello" {
		t.Errorf("failure %+v, want the server's handshake_failure (40) after the ClientHello", f)
	}
}

// TestMITMKeyLog: the key log lets tshark decrypt a capture of both legs;
// the request's path is found in it.
func TestMITMKeyLog(t *testing.T) {
	tshark := testtool.Need(t, "tshark")
	dumpcap := testtool.Need(t, "dumpcap")
	keylog := filepath.Join(t.TempDir(), "keys.log")
	kf, err := os.OpenFile(keylog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	h, mca := mitmProxyWith(t, nil, Options{KeyLog: kf})
	target := h2Server(t, h, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret body") })
	u, _ := url.Parse(target)
	_, proxyPort, _ := net.SplitHostPort(h.addr)

	pcap := filepath.Join(t.TempDir(), "cap.pcapng")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cap := exec.CommandContext(ctx, dumpcap, "-q", "-i", "lo", "-f", fmt.Sprintf("tcp port %s or tcp port %s", proxyPort, u.Port()), "-w", pcap)
	if err := cap.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, pcap)
	pool := x509.NewCertPool()
	pool.AddCert(mca.Certificate())
	pu, _ := url.Parse("http://" + h.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}
	get(t, &http.Client{Transport: tr}, target+"/the-path-in-the-capture")
	tr.CloseIdleConnections()
	h.event()
	time.Sleep(300 * time.Millisecond) // let dumpcap write the last packets
	_ = cap.Process.Signal(os.Interrupt)
	_ = cap.Wait()
	out, err := exec.Command(tshark, "-r", pcap, "-o", "tls.keylog_file:"+keylog, "-d", "tcp.port=="+proxyPort+",http",
		"-Y", "http.request or http2.header", "-T", "fields", "-e", "http.request.uri", "-e", "http2.header.value").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "/the-path-in-the-capture"); n < 2 {
		t.Errorf("the path appears %d times in the decrypted capture, want both legs:\n%s", n, out)
	}
}

// waitFile waits for a file to appear (a capture starting).
func waitFile(t *testing.T, path string) {
	t.Helper()
	for range 100 {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
}
