package tlsinfo

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/timing"
)

// relay is a TCP relay on loopback that feeds a Tracker the way the proxy
// does: each chunk before it is forwarded, a FIN passed on as a half-close
// and reported with EOF, a reset passed on as a reset and reported with
// Reset.
type relay struct {
	addr     string
	trackers chan *Tracker
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: ln.Addr().String(), trackers: make(chan *Tracker, 8)}
	testnet.Serve(t, ln, func(c net.Conn) {
		s, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		r.trackers <- relayConn(c.(*net.TCPConn), s.(*net.TCPConn))
	})
	return r
}

func relayConn(c, s *net.TCPConn) *Tracker {
	tr := NewTracker(0)
	start := time.Now()
	var once sync.Once
	abort := func() {
		once.Do(func() {
			_ = c.SetLinger(0)
			_ = s.SetLinger(0)
			c.Close()
			s.Close()
		})
	}
	pipe := func(dir Direction, src, dst *net.TCPConn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			at := time.Since(start)
			if n > 0 {
				tr.Feed(dir, buf[:n], at)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					if timing.IsReset(werr) {
						tr.Reset(1-dir, at)
					}
					abort()
					return
				}
			}
			switch {
			case err == io.EOF:
				tr.EOF(dir, at)
				_ = dst.CloseWrite()
				return
			case timing.IsReset(err):
				tr.Reset(dir, at)
				abort()
				return
			case err != nil:
				return // the other direction aborted
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pipe(ServerToClient, s, c) }()
	pipe(ClientToServer, c, s)
	wg.Wait()
	c.Close()
	s.Close()
	return tr
}

func (r *relay) tracker(t *testing.T) *Tracker {
	t.Helper()
	select {
	case tr := <-r.trackers:
		return tr
	case <-time.After(15 * time.Second):
		t.Fatal("relay: no connection ended within 15s")
		return nil
	}
}

// Clients, each run against the relay's address.

func goClient(cfg *tls.Config) func(t *testing.T, addr string) {
	return func(t *testing.T, addr string) {
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
		}
	}
}

// goEchoClient handshakes, exchanges one echo (which also delivers TLS
// 1.3 session tickets) and closes.
func goEchoClient(cfg *tls.Config) func(t *testing.T, addr string) {
	return func(t *testing.T, addr string) {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoOnce(c); err != nil {
			t.Fatal(err)
		}
	}
}

// silentClient is a Go client that, instead of sending the alert for a
// certificate it refuses, hangs up: with a FIN, or a reset when rst is set.
func silentClient(cfg *tls.Config, rst bool) func(t *testing.T, addr string) {
	return func(t *testing.T, addr string) {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(&hangUpOnAlert{TCPConn: raw.(*net.TCPConn), rst: rst}, cfg)
		if err := c.Handshake(); err == nil {
			t.Error("the handshake succeeded; the client should refuse the certificate")
		}
		raw.Close()
	}
}

// hangUpOnAlert closes instead of writing records that hold an alert
// (plaintext, or TLS 1.3's alert-sized application_data record; crypto/tls
// flushes it together with its compatibility change_cipher_spec).
type hangUpOnAlert struct {
	*net.TCPConn
	rst bool
}

func (h *hangUpOnAlert) Write(p []byte) (int, error) {
	for rec := p; len(rec) >= 5; {
		n := int(rec[3])<<8 | int(rec[4])
		if rec[0] == recordAlert || rec[0] == recordApplicationData && n < minTLS13FinishedRecord {
			if h.rst {
				_ = h.SetLinger(0)
			}
			h.Close()
			return 0, net.ErrClosed
		}
		rec = rec[min(len(rec), 5+n):]
	}
	return h.TCPConn.Write(p)
}

func opensslClient(args ...string) func(t *testing.T, addr string) {
	return func(t *testing.T, addr string) {
		openssl := testtool.Need(t, "openssl")
		cmd := exec.Command(openssl, append([]string{"s_client", "-connect", addr, "-servername", "localhost"}, args...)...)
		out, _ := cmd.CombinedOutput() // stdin is empty: it handshakes, then hangs up
		t.Logf("openssl s_client %s:\n%s", strings.Join(args, " "), lastLines(out, 6))
	}
}

func curlClient(args ...string) func(t *testing.T, addr string) {
	return func(t *testing.T, addr string) {
		curl := testtool.Need(t, "curl")
		_, port, _ := net.SplitHostPort(addr)
		args := append([]string{"-sS", "--max-time", "10", "--resolve", "localhost:" + port + ":127.0.0.1", "https://localhost:" + port + "/"}, args...)
		out, _ := exec.Command(curl, args...).CombinedOutput()
		t.Logf("curl %s: %s", strings.Join(args, " "), lastLines(out, 3))
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// hangUpServer reads the client's first record and then closes, or resets
// when rst is set, without a word.
func hangUpServer(t *testing.T, rst bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err == nil {
			_, _ = io.ReadFull(c, make([]byte, int(hdr[3])<<8|int(hdr[4])))
		}
		if rst {
			_ = c.(*net.TCPConn).SetLinger(0)
		}
		c.Close()
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// pinFail is a VerifyPeerCertificate that fails like a pinning check: the
// chain verified, but its key is not the pinned one.
func pinFail([][]byte, [][]*x509.Certificate) error {
	return errors.New("public key not pinned")
}

func TestTrackerOutcomes(t *testing.T) {
	p := newPKI(t)
	certFile, keyFile := testpki.WriteFiles(t, p.ecdsa)
	caFile := p.ca.WriteCert(t)
	pin := sha256.Sum256(p.other.Cert.RawSubjectPublicKeyInfo)
	goServer := func(cfg *tls.Config) func(t *testing.T) string {
		return func(t *testing.T) string {
			cfg.Certificates = []tls.Certificate{p.ecdsa}
			return testpki.StartTLS(t, cfg, nil).Addr
		}
	}
	opensslServer := func(args ...string) func(t *testing.T) string {
		return func(t *testing.T) string {
			return testtool.OpenSSLServer(t, append([]string{"-cert", certFile, "-key", keyFile, "-www"}, args...)...)
		}
	}
	trusting := func(mod func(*tls.Config)) *tls.Config {
		cfg := p.clientConfig()
		if mod != nil {
			mod(cfg)
		}
		return cfg
	}
	untrusting := &tls.Config{ServerName: "localhost", RootCAs: p.other.Pool}
	tls12 := &tls.Config{MaxVersion: tls.VersionTLS12}

	type want struct {
		retry     *event.HelloRetry // times are checked for order, not value
		failure   *event.HandshakeFailure
		rejected  *event.ClientRejected
		noFailure bool // the handshake must complete
	}
	code := func(c int) *int { return &c }
	for _, tc := range []struct {
		name   string
		server func(t *testing.T) string
		client func(t *testing.T, addr string)
		prime  bool // a first connection primes the client's session cache
		want   want
	}{
		{
			name:   "openssl HRR",
			server: opensslServer("-groups", "P-256"),
			client: opensslClient("-groups", "X448:P-256", "-CAfile", caFile),
			want:   want{retry: &event.HelloRetry{Group: "secp256r1", GroupCode: 23, KeyShares: []string{"secp256r1"}}, noFailure: true},
		},
		{
			// RFC 8446 section 4.1.2: a resuming client recomputes the
			// pre_shared_key binders for its second hello.
			name:   "Go HRR while resuming",
			server: goServer(&tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP256}}),
			client: goEchoClient(trusting(func(c *tls.Config) { c.ClientSessionCache = tls.NewLRUClientSessionCache(1) })),
			prime:  true,
			want:   want{retry: &event.HelloRetry{Group: "secp256r1", GroupCode: 23, KeyShares: []string{"secp256r1"}, Changed: []string{"pre_shared_key"}}, noFailure: true},
		},
		{
			name:   "openssl no shared cipher",
			server: opensslServer("-no_tls1_3", "-cipher", "AES256-SHA"),
			client: opensslClient("-tls1_2", "-cipher", "AES128-SHA"),
			want:   want{failure: &event.HandshakeFailure{By: "server", How: "alert", Alert: "fatal handshake_failure (40)", AlertCode: code(40), Phase: "client_hello"}},
		},
		{
			name:   "openssl TLS1.1 server, TLS1.3-only client",
			server: opensslServer("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"),
			client: goClient(trusting(func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 })),
			want:   want{failure: &event.HandshakeFailure{By: "server", How: "alert", Alert: "fatal protocol_version (70)", AlertCode: code(70), Phase: "client_hello"}},
		},
		{
			name:   "server closes after the ClientHello",
			server: func(t *testing.T) string { return hangUpServer(t, false) },
			client: goClient(p.clientConfig()),
			want:   want{failure: &event.HandshakeFailure{By: "server", How: "close", Phase: "client_hello"}},
		},
		{
			name:   "server resets after the ClientHello",
			server: func(t *testing.T) string { return hangUpServer(t, true) },
			client: goClient(p.clientConfig()),
			want:   want{failure: &event.HandshakeFailure{By: "server", How: "rst", Phase: "client_hello"}},
		},
		{
			name:   "Go TLS1.2 client, unknown CA",
			server: goServer(tls12.Clone()),
			client: goClient(untrusting),
			want: want{
				failure:  &event.HandshakeFailure{By: "client", How: "alert", Alert: "fatal bad_certificate (42)", AlertCode: code(42), Phase: "server_flight"},
				rejected: &event.ClientRejected{Signal: "alert", Alert: "fatal bad_certificate (42)", AlertCode: code(42), Likely: "unknown"},
			},
		},
		{
			name:   "Go TLS1.3 client, unknown CA",
			server: goServer(&tls.Config{}),
			client: goClient(untrusting),
			want: want{
				failure:  &event.HandshakeFailure{By: "client", How: "alert", Alert: "encrypted alert", Phase: "server_flight"},
				rejected: &event.ClientRejected{Signal: "encrypted_alert", Alert: "encrypted alert", Likely: "unknown"},
			},
		},
		{
			name:   "Go TLS1.2 client, pinning",
			server: goServer(tls12.Clone()),
			client: goClient(trusting(func(c *tls.Config) { c.VerifyPeerCertificate = pinFail })),
			want: want{
				failure:  &event.HandshakeFailure{By: "client", How: "alert", Alert: "fatal bad_certificate (42)", AlertCode: code(42), Phase: "server_flight"},
				rejected: &event.ClientRejected{Signal: "alert", Alert: "fatal bad_certificate (42)", AlertCode: code(42), Likely: "unknown"},
			},
		},
		{
			name:   "client hangs up after the TLS1.3 flight",
			server: goServer(&tls.Config{}),
			client: silentClient(untrusting, false),
			want: want{
				failure:  &event.HandshakeFailure{By: "client", How: "close", Phase: "server_flight"},
				rejected: &event.ClientRejected{Signal: "close", Likely: "unknown"},
			},
		},
		{
			name:   "client resets after the TLS1.2 flight",
			server: goServer(tls12.Clone()),
			client: silentClient(untrusting, true),
			want: want{
				failure:  &event.HandshakeFailure{By: "client", How: "rst", Phase: "server_flight"},
				rejected: &event.ClientRejected{Signal: "rst", Likely: "unknown"},
			},
		},
		{
			name:   "curl TLS1.2 without the CA",
			server: goServer(tls12.Clone()),
			client: curlClient(),
			want: want{
				failure:  &event.HandshakeFailure{By: "client", How: "alert", Alert: "fatal unknown_ca (48)", AlertCode: code(48), Phase: "server_flight"},
				rejected: &event.ClientRejected{Signal: "alert", Alert: "fatal unknown_ca (48)", AlertCode: code(48), Likely: "untrusted_ca"},
			},
		},
		{
			// OpenSSL's client writes in plaintext until it has read the
			// server's Finished, so even its TLS 1.3 alert is readable.
			name:   "curl TLS1.3 without the CA",
			server: goServer(&tls.Config{}),
			client: curlClient(),
			want: want{
				failure:  &event.HandshakeFailure{By: "client", How: "alert", Alert: "fatal unknown_ca (48)", AlertCode: code(48), Phase: "server_flight"},
				rejected: &event.ClientRejected{Signal: "alert", Alert: "fatal unknown_ca (48)", AlertCode: code(48), Likely: "untrusted_ca"},
			},
		},
		// No false positives: these handshakes complete.
		{
			name:   "curl TLS1.3 pinned key mismatch after the handshake",
			server: goServer(&tls.Config{}),
			client: curlClient("--cacert", caFile, "--pinnedpubkey", "sha256//"+base64.StdEncoding.EncodeToString(pin[:])),
			want:   want{noFailure: true},
		},
		{
			name:   "openssl s_client hangs up after the handshake",
			server: goServer(&tls.Config{}),
			client: opensslClient("-CAfile", caFile),
			want:   want{noFailure: true},
		},
		{
			name:   "openssl TLS1.3 CCM_8 (the shortest Finished record)",
			server: opensslServer("-ciphersuites", "TLS_AES_128_CCM_8_SHA256"),
			client: opensslClient("-ciphersuites", "TLS_AES_128_CCM_8_SHA256", "-CAfile", caFile),
			want:   want{noFailure: true},
		},
		{
			name:   "Go TLS1.3 client certificate",
			server: goServer(&tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.ca.Pool}),
			client: goClient(trusting(func(c *tls.Config) { c.Certificates = []tls.Certificate{p.rsa} })),
			want:   want{noFailure: true},
		},
		{
			name:   "curl TLS1.2",
			server: goServer(tls12.Clone()),
			client: curlClient("--cacert", caFile),
			want:   want{noFailure: true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRelay(t, tc.server(t))
			if tc.prime {
				tc.client(t, r.addr)
				r.tracker(t)
			}
			tc.client(t, r.addr)
			info := r.tracker(t).Info()
			ev := info.Event()
			if ev == nil {
				t.Fatalf("no ClientHello seen: %s", summary(info))
			}
			defer func() {
				if t.Failed() {
					t.Logf("summary:\n%s", summary(info))
				}
			}()
			if info.Err != nil {
				t.Errorf("inspection error: %v", info.Err)
			}
			w := tc.want
			if w.noFailure {
				if ev.Failure != nil || ev.ClientRejected != nil || info.HandshakeDoneAt < 0 {
					t.Errorf("handshake_failure=%+v client_rejected=%+v done=%v, want a completed handshake", ev.Failure, ev.ClientRejected, info.HandshakeDoneAt)
				}
			}
			checkRetry(t, info, ev.HelloRetry, w.retry)
			checkFailure(t, info, ev.Failure, w.failure)
			checkRejected(t, ev.ClientRejected, w.rejected)
		})
	}
}

func checkRetry(t *testing.T, info Info, got, want *event.HelloRetry) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("hello_retry_request = %+v, want none", got)
		}
		return
	}
	if got == nil {
		t.Fatal("no hello_retry_request")
	}
	if got.Group != want.Group || got.GroupCode != want.GroupCode || got.Cookie != want.Cookie ||
		!slices.Equal(got.KeyShares, want.KeyShares) || !slices.Equal(got.Changed, want.Changed) {
		t.Errorf("hello_retry_request = %+v, want %+v", *got, *want)
	}
	// The extra round trip: first hello, HRR, second hello, done, in order,
	// and the handshake counted from the first hello.
	r := info.Retry
	if !(info.ClientHelloAt <= r.At && r.At <= r.SecondClientHelloAt && r.SecondClientHelloAt <= info.ServerHelloAt &&
		info.ServerHelloAt <= info.HandshakeDoneAt) {
		t.Errorf("times CH=%v HRR=%v CH2=%v SH=%v done=%v are out of order", info.ClientHelloAt, r.At, r.SecondClientHelloAt, info.ServerHelloAt, info.HandshakeDoneAt)
	}
	if ev := info.Event(); ev.HandshakeMS == nil || *ev.HandshakeMS < *got.SecondClientHelloMS-*ev.ClientHelloMS {
		t.Errorf("handshake_ms %v does not include the retry (second hello at %v, first at %v)", ev.HandshakeMS, *got.SecondClientHelloMS, *ev.ClientHelloMS)
	}
}

func checkFailure(t *testing.T, info Info, got, want *event.HandshakeFailure) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("handshake_failure = %+v, want none", got)
		}
		return
	}
	if got == nil {
		t.Fatal("no handshake_failure")
	}
	if got.By != want.By || got.How != want.How || got.Alert != want.Alert || !equalPtr(got.AlertCode, want.AlertCode) || got.Phase != want.Phase {
		t.Errorf("handshake_failure = %s, want %s", show(got), show(want))
	}
	if got.AtMS == nil || *got.AtMS < *timing.MSPtr(info.ClientHelloAt) {
		t.Errorf("handshake_failure.at_ms = %v, before the ClientHello", got.AtMS)
	}
}

func checkRejected(t *testing.T, got, want *event.ClientRejected) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("client_rejected = %s, want none", show(got))
		}
		return
	}
	if got == nil {
		t.Fatal("no client_rejected")
	}
	if got.Signal != want.Signal || got.Alert != want.Alert || !equalPtr(got.AlertCode, want.AlertCode) || got.Likely != want.Likely {
		t.Errorf("client_rejected = %s, want %s", show(got), show(want))
	}
	if got.AfterMS == nil || *got.AfterMS < 0 {
		t.Errorf("client_rejected.after_ms = %v", got.AfterMS)
	}
}

func equalPtr[T comparable](a, b *T) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

func show(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestRejectionLikely reads one real rejection (a Go client failing a pin
// check on a TLS 1.2 chain it could verify) under the verdicts the proxy
// can reach on that chain.
func TestRejectionLikely(t *testing.T) {
	p := newPKI(t)
	srv := testpki.StartTLS(t, &tls.Config{Certificates: []tls.Certificate{p.ecdsa}, MaxVersion: tls.VersionTLS12}, nil)
	r := startRelay(t, srv.Addr)
	cfg := p.clientConfig()
	cfg.VerifyPeerCertificate = pinFail
	goClient(cfg)(t, r.addr)
	info := r.tracker(t).Info()
	for _, tc := range []struct {
		name  string
		host  string
		roots *x509.CertPool
		want  string
	}{
		{"no verdict", "", nil, LikelyUnknown},
		{"chain the proxy trusts", "localhost", p.ca.Pool, LikelyPinning},
		{"CA the proxy does not know", "localhost", p.other.Pool, LikelyUntrustedCA},
		{"wrong name", "example.com", p.ca.Pool, LikelyInvalidCertificate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := info.Event()
			if ev.ClientRejected == nil {
				t.Fatalf("no client_rejected: %s", summary(info))
			}
			if tc.roots != nil {
				SetVerdict(ev, Verify(info.Certificates, tc.host, tc.roots, time.Now()))
			}
			if got := ev.ClientRejected.Likely; got != tc.want {
				t.Errorf("likely = %q (verify_error_kind %q), want %q", got, ev.VerifyErrorKind, tc.want)
			}
		})
	}
}
