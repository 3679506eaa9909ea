package tlsinfo

import (
	"bytes"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// scenario is a real handshake between crypto/tls peers over loopback.
type scenario struct {
	name   string
	server func(p *pki) *tls.Config
	client func(p *pki) *tls.Config
	// resume runs a first connection that only primes the session cache.
	resume bool
	// fails is true when the handshake is meant to fail.
	fails bool
	check func(t *testing.T, p *pki, info Info)
}

func scenarios() []scenario {
	tls12 := func(p *pki, cert tls.Certificate) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12}
	}
	return []scenario{
		{
			name:   "TLS1.2 ECDHE-RSA",
			server: func(p *pki) *tls.Config { return tls12(p, p.rsa) },
			client: (*pki).clientConfig,
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS12)
				wantSuiteFamily(t, info, "TLS_ECDHE_RSA_")
				wantChain(t, info, p.rsa)
				if info.ServerKeyExchangeGroup != "x25519" {
					t.Errorf("ServerKeyExchangeGroup = %q, want x25519", info.ServerKeyExchangeGroup)
				}
				if info.Resumed || info.Retry != nil || info.OCSPStapled {
					t.Errorf("Resumed/HelloRetry/OCSPStapled = %v/%v/%v, want false", info.Resumed, info.Retry != nil, info.OCSPStapled)
				}
			},
		},
		{
			name: "TLS1.2 ECDHE-ECDSA with OCSP staple",
			server: func(p *pki) *tls.Config {
				cert := p.ecdsa
				cert.OCSPStaple = []byte{0x30, 0x03, 0x0a, 0x01, 0x00}
				return tls12(p, cert)
			},
			client: (*pki).clientConfig,
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS12)
				wantSuiteFamily(t, info, "TLS_ECDHE_ECDSA_")
				wantChain(t, info, p.ecdsa)
				if !info.OCSPStapled {
					t.Error("OCSPStapled = false, want true")
				}
			},
		},
		{
			name: "TLS1.2 RSA key exchange",
			server: func(p *pki) *tls.Config {
				cfg := tls12(p, p.rsa)
				cfg.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
				return cfg
			},
			client: func(p *pki) *tls.Config {
				cfg := p.clientConfig()
				cfg.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}
				return cfg
			},
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS12)
				if got := CipherSuiteName(info.CipherSuite); got != "TLS_RSA_WITH_AES_128_GCM_SHA256" {
					t.Errorf("suite = %s", got)
				}
				wantChain(t, info, p.rsa)
				if info.ServerKeyExchangeGroup != "" {
					t.Errorf("ServerKeyExchangeGroup = %q, want none", info.ServerKeyExchangeGroup)
				}
			},
		},
		{
			// TLS 1.0 CBC: Go splits application data 1/n-1 against BEAST.
			name: "TLS1.0 ECDHE-RSA CBC",
			server: func(p *pki) *tls.Config {
				cfg := tls12(p, p.rsa)
				cfg.MinVersion = tls.VersionTLS10
				return cfg
			},
			client: func(p *pki) *tls.Config {
				cfg := p.clientConfig()
				cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
				return cfg
			},
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS10)
				if got := CipherSuiteName(info.CipherSuite); !strings.HasSuffix(got, "_CBC_SHA") {
					t.Errorf("suite = %s, want a CBC suite", got)
				}
				wantChain(t, info, p.rsa)
			},
		},
		{
			name:   "TLS1.2 resumption",
			server: func(p *pki) *tls.Config { return tls12(p, p.rsa) },
			client: func(p *pki) *tls.Config {
				cfg := p.clientConfig()
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
				return cfg
			},
			resume: true,
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS12)
				if !info.Resumed || !info.ClientHello.SessionResumption {
					t.Errorf("Resumed = %v, ClientHello.SessionResumption = %v, want true", info.Resumed, info.ClientHello.SessionResumption)
				}
				if len(info.Certificates) != 0 {
					t.Errorf("%d certificates in an abbreviated handshake", len(info.Certificates))
				}
			},
		},
		{
			name: "TLS1.2 ALPN h2",
			server: func(p *pki) *tls.Config {
				cfg := tls12(p, p.ecdsa)
				cfg.NextProtos = []string{"h2", "http/1.1"}
				return cfg
			},
			client: func(p *pki) *tls.Config {
				cfg := p.clientConfig()
				cfg.NextProtos = []string{"h2", "http/1.1"}
				return cfg
			},
			check: func(t *testing.T, p *pki, info Info) {
				if info.ServerHello.ALPN != "h2" {
					t.Errorf("ServerHello.ALPN = %q, want h2", info.ServerHello.ALPN)
				}
				if got := info.ClientHello.ALPN; strings.Join(got, ",") != "h2,http/1.1" {
					t.Errorf("ClientHello.ALPN = %q", got)
				}
				if !strings.HasSuffix(strings.Split(info.JA4, "_")[0], "h2") {
					t.Errorf("JA4 %s does not end its first part in h2", info.JA4)
				}
			},
		},
		{
			name:   "TLS1.3",
			server: func(p *pki) *tls.Config { return &tls.Config{Certificates: []tls.Certificate{p.ecdsa}} },
			client: (*pki).clientConfig,
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS13)
				if info.ServerHello.LegacyVersion != "TLS 1.2" || info.ServerHello.KeyExchangeGroup == "" {
					t.Errorf("ServerHello = %+v", info.ServerHello)
				}
				if len(info.Certificates) != 0 || info.Resumed || info.Retry != nil {
					t.Errorf("certs/resumed/HRR = %d/%v/%v", len(info.Certificates), info.Resumed, info.Retry != nil)
				}
			},
		},
		{
			name: "TLS1.3 HelloRetryRequest",
			server: func(p *pki) *tls.Config {
				return &tls.Config{Certificates: []tls.Certificate{p.rsa}, CurvePreferences: []tls.CurveID{tls.CurveP256}}
			},
			client: (*pki).clientConfig,
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS13)
				if info.Retry == nil || info.ServerHello.HelloRetryRequest {
					t.Errorf("HelloRetry = %v, final ServerHello.HelloRetryRequest = %v", info.Retry != nil, info.ServerHello.HelloRetryRequest)
				}
				if info.ServerHello.KeyExchangeGroup != "secp256r1" {
					t.Errorf("KeyExchangeGroup = %q, want secp256r1", info.ServerHello.KeyExchangeGroup)
				}
				for _, g := range info.ClientHello.KeyShares {
					if g == "secp256r1" {
						t.Errorf("first ClientHello already offered secp256r1: %v", info.ClientHello.KeyShares)
					}
				}
			},
		},
		{
			name:   "TLS1.3 resumption",
			server: func(p *pki) *tls.Config { return &tls.Config{Certificates: []tls.Certificate{p.rsa}} },
			client: func(p *pki) *tls.Config {
				cfg := p.clientConfig()
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
				return cfg
			},
			resume: true,
			check: func(t *testing.T, p *pki, info Info) {
				wantVersion(t, info, tls.VersionTLS13)
				if !info.Resumed || !info.ServerHello.Raw.PreSharedKey || !info.ClientHello.SessionResumption {
					t.Errorf("Resumed = %v, want true", info.Resumed)
				}
			},
		},
		{
			name: "TLS1.3 ALPN http/1.1",
			server: func(p *pki) *tls.Config {
				return &tls.Config{Certificates: []tls.Certificate{p.ecdsa}, NextProtos: []string{"http/1.1"}}
			},
			client: func(p *pki) *tls.Config {
				cfg := p.clientConfig()
				cfg.NextProtos = []string{"http/1.1"}
				return cfg
			},
			check: func(t *testing.T, p *pki, info Info) {
				if !strings.HasPrefix(info.JA4, "t13d") || !strings.HasSuffix(strings.Split(info.JA4, "_")[0], "h1") {
					t.Errorf("JA4 = %s, want t13d...h1", info.JA4)
				}
				if info.ServerHello.ALPN != "" {
					t.Errorf("TLS 1.3 ServerHello.ALPN = %q; ALPN is encrypted", info.ServerHello.ALPN)
				}
			},
		},
		{
			name:   "TLS1.2 server refuses TLS1.3-only client",
			server: func(p *pki) *tls.Config { return tls12(p, p.rsa) },
			client: func(p *pki) *tls.Config {
				cfg := p.clientConfig()
				cfg.MinVersion = tls.VersionTLS13
				return cfg
			},
			fails: true,
			check: func(t *testing.T, p *pki, info Info) {
				if info.ServerAlert != "fatal protocol_version (70)" || info.ServerHello != nil {
					t.Errorf("ServerAlert = %q, ServerHello = %v", info.ServerAlert, info.ServerHello)
				}
			},
		},
		{
			name:   "TLS1.2 client rejects unknown CA",
			server: func(p *pki) *tls.Config { return tls12(p, p.rsa) },
			client: func(p *pki) *tls.Config { return &tls.Config{ServerName: "localhost", RootCAs: p.other.Pool} },
			fails:  true,
			check: func(t *testing.T, p *pki, info Info) {
				if info.ClientAlert != "fatal bad_certificate (42)" || info.HandshakeDoneAt >= 0 {
					t.Errorf("ClientAlert = %q, HandshakeDoneAt = %v", info.ClientAlert, info.HandshakeDoneAt)
				}
				wantChain(t, info, p.rsa)
			},
		},
		{
			name:   "TLS1.3 client rejects unknown CA",
			server: func(p *pki) *tls.Config { return &tls.Config{Certificates: []tls.Certificate{p.rsa}} },
			client: func(p *pki) *tls.Config { return &tls.Config{ServerName: "localhost", RootCAs: p.other.Pool} },
			fails:  true,
			check: func(t *testing.T, p *pki, info Info) {
				if info.ClientAlert != "encrypted alert" || info.HandshakeDoneAt >= 0 {
					t.Errorf("ClientAlert = %q, HandshakeDoneAt = %v", info.ClientAlert, info.HandshakeDoneAt)
				}
			},
		},
	}
}

func scenarioNamed(t *testing.T, name string) scenario {
	for _, s := range scenarios() {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("no scenario %q", name)
	return scenario{}
}

func wantVersion(t *testing.T, info Info, v uint16) {
	t.Helper()
	if info.Version != v || info.ServerHello == nil || info.ServerHello.Version != VersionName(v) {
		t.Errorf("Version = %s, want %s", VersionName(info.Version), VersionName(v))
	}
}

func wantSuiteFamily(t *testing.T, info Info, prefix string) {
	t.Helper()
	if got := CipherSuiteName(info.CipherSuite); !strings.HasPrefix(got, prefix) {
		t.Errorf("cipher suite %s, want %s*", got, prefix)
	}
}

func wantChain(t *testing.T, info Info, cert tls.Certificate) {
	t.Helper()
	if info.CertificateErr != nil || len(info.Certificates) != len(cert.Certificate) {
		t.Fatalf("chain of %d (err %v), want %d", len(info.Certificates), info.CertificateErr, len(cert.Certificate))
	}
	for i, c := range info.Certificates {
		if !bytes.Equal(c.Raw, cert.Certificate[i]) {
			t.Errorf("certificate %d differs from the one served", i)
		}
	}
}

// run captures a scenario's flow.
func (s scenario) run(t *testing.T, p *pki) flow {
	t.Helper()
	srv := testpki.StartTLS(t, s.server(p), nil)
	cfg := s.client(p)
	if s.resume {
		if _, err := capture(t, srv.Addr, cfg, echoOnce); err != nil {
			t.Fatalf("priming connection: %v", err)
		}
	}
	f, err := capture(t, srv.Addr, cfg, echoOnce)
	if s.fails != (err != nil) {
		t.Fatalf("handshake error %v, want failure %v", err, s.fails)
	}
	return f
}

// expectedTimes derives the timings from an independent record scan.
func expectedTimes(f flow, tls13 bool) (ch, sh, done, up, down time.Duration) {
	c, s := records(f, ClientToServer), records(f, ServerToClient)
	ch, sh, done, up, down = -1, -1, -1, -1, -1
	if len(c) > 0 {
		ch = at(c[0].endEvt)
	}
	for _, r := range s {
		if r.typ == recordHandshake && r.msgType == typeServerHello {
			sh = at(r.endEvt)
		}
	}
	// finished returns the record after a side's first CCS (TLS 1.2).
	finished := func(rs []wireRecord) int {
		for i, r := range rs {
			if r.typ == recordChangeCipherSpec && i+1 < len(rs) {
				return i + 1
			}
		}
		return -1
	}
	cfin := -1
	if tls13 {
		for i, r := range c {
			// Shorter records are encrypted alerts, not a Finished.
			if r.typ == recordApplicationData && r.length >= minTLS13FinishedRecord {
				cfin = i
				done = at(r.endEvt)
				break
			}
		}
	} else {
		cfin = finished(c)
		sfin := finished(s)
		if cfin >= 0 && sfin >= 0 {
			done = at(max(c[cfin].endEvt, s[sfin].endEvt))
		}
	}
	if cfin < 0 {
		return
	}
	for _, r := range c[cfin+1:] {
		if r.typ == recordApplicationData {
			up = at(r.headerEvt)
			break
		}
	}
	for _, r := range s {
		if r.typ == recordApplicationData && done >= 0 && at(r.headerEvt) > done {
			down = at(r.headerEvt)
			break
		}
	}
	return
}

func TestTrackerRealHandshakes(t *testing.T) {
	p := newPKI(t)
	for _, s := range scenarios() {
		t.Run(s.name, func(t *testing.T) {
			f := s.run(t, p)
			info := replay(f, 0, nil).Info()
			if info.Err != nil || info.NotTLS != "" {
				t.Fatalf("Err = %v, NotTLS = %q", info.Err, info.NotTLS)
			}
			if info.ClientHello == nil || info.JA3Hash == "" || !strings.HasPrefix(info.JA4, "t1") {
				t.Fatalf("no ClientHello fingerprints: %s", summary(info))
			}
			tls13 := info.Version == tls.VersionTLS13
			ch, sh, done, up, down := expectedTimes(f, tls13)
			if info.ClientHelloAt != ch || info.ServerHelloAt != sh || info.HandshakeDoneAt != done ||
				info.AppDataUpAt != up || info.AppDataDownAt != down {
				t.Errorf("times CH/SH/done/up/down = %v/%v/%v/%v/%v, want %v/%v/%v/%v/%v",
					info.ClientHelloAt, info.ServerHelloAt, info.HandshakeDoneAt, info.AppDataUpAt, info.AppDataDownAt,
					ch, sh, done, up, down)
			}
			if !s.fails && (done < 0 || up < 0 || down < 0) {
				t.Errorf("a successful echo should show done, up and down: %s", summary(info))
			}
			s.check(t, p, info)
			if t.Failed() {
				t.Logf("summary:\n%s", summary(info))
			}
		})
	}
}

// TestTrackerSplitAnywhere feeds each real flow byte by byte, and split in
// two at every offset of every event that is fed before inspection ends,
// and wants exactly what feeding it whole gives.
func TestTrackerSplitAnywhere(t *testing.T) {
	p := newPKI(t)
	for _, s := range scenarios() {
		t.Run(s.name, func(t *testing.T) {
			f := s.run(t, p)
			base := replay(f, 0, nil)
			want := summary(base.Info())

			bytewise := replay(f, 0, func(_ int, data []byte) [][]byte {
				parts := make([][]byte, len(data))
				for i := range data {
					parts[i] = data[i : i+1]
				}
				return parts
			})
			if got := summary(bytewise.Info()); got != want {
				t.Fatalf("byte-by-byte feed differs:\n%s\nwant:\n%s", got, want)
			}

			last := lastUsefulEvent(f)
			for i := 0; i <= last; i++ {
				for k := 1; k < len(f[i].data); k++ {
					tr := replay(f, 0, func(j int, data []byte) [][]byte {
						if j != i {
							return [][]byte{data}
						}
						return [][]byte{data[:k], data[k:]}
					})
					if got := summary(tr.Info()); got != want {
						t.Fatalf("event %d split at %d differs:\n%s\nwant:\n%s", i, k, got, want)
					}
				}
			}
		})
	}
}

// lastUsefulEvent is the last event the Tracker still wants.
func lastUsefulEvent(f flow) int {
	tr := NewTracker(0)
	last := 0
	for i, e := range f {
		if tr.Feed(e.dir, e.data, at(i)) {
			last = i
		}
	}
	return last
}

// TestTrackerReframed rebuilds a real TLS 1.2 server flight so that
// several handshake messages share a record, or each message is spread over
// tiny records, and wants the same findings.
func TestTrackerReframed(t *testing.T) {
	p := newPKI(t)
	s := scenarioNamed(t, "TLS1.2 ECDHE-ECDSA with OCSP staple") // five messages
	f := s.run(t, p)
	want := summary(replay(f, 0, nil).Info())
	for _, size := range []int{1, 7, 100, 1 << 14} {
		t.Run("records of "+strconv.Itoa(size), func(t *testing.T) {
			rf := reframeServerFlight(t, f, size)
			info := replay(rf, 0, nil).Info()
			// The flight now arrives in the first server event, so only
			// ServerHelloAt may move.
			info.ServerHelloAt = replay(f, 0, nil).Info().ServerHelloAt
			if got := summary(info); got != want {
				t.Errorf("reframed flight differs:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// reframeServerFlight replaces the server's leading plaintext handshake
// records (up to, not including, NewSessionTicket) by records of size bytes
// carrying the same messages, delivered in the first server event.
func reframeServerFlight(t *testing.T, f flow, size int) flow {
	t.Helper()
	var payload []byte
	end := 0
	for _, r := range records(f, ServerToClient) {
		if r.typ != recordHandshake || r.msgType == 4 {
			break
		}
		s := f.stream(ServerToClient)
		payload = append(payload, s[r.start+5:r.start+5+r.length]...)
		end = r.start + 5 + r.length
	}
	if end == 0 {
		t.Fatal("no server flight")
	}
	var out flow
	off, first := 0, true
	for _, e := range f {
		if e.dir != ServerToClient {
			out = append(out, e)
			continue
		}
		data := e.data
		if off < end {
			skip := min(end-off, len(data))
			off += len(data)
			data = data[skip:]
		} else {
			off += len(data)
		}
		if first {
			data = append(makeRecords(recordHandshake, payload, size), data...)
			first = false
		}
		// Keep emptied events so that event times stay put.
		out = append(out, chunk{ServerToClient, data})
	}
	return out
}

// TestTrackerClientHelloAcrossRecords spreads a real ClientHello over
// records of every size from 1 byte up.
func TestTrackerClientHelloAcrossRecords(t *testing.T) {
	msg := readHex(t, "clienthello/smithproxy-ja4-1.hex")
	want, err := ParseClientHello(msg)
	if err != nil {
		t.Fatal(err)
	}
	for size := 1; size <= len(msg); size++ {
		tr := NewTracker(0)
		tr.Feed(ClientToServer, makeRecords(recordHandshake, msg, size), 0)
		info := tr.Info()
		if info.Err != nil || info.ClientHello == nil || info.JA4 != JA4(&want.Raw) {
			t.Fatalf("records of %d bytes: Err=%v ClientHello=%v", size, info.Err, info.ClientHello != nil)
		}
	}
}

func TestTrackerNotTLS(t *testing.T) {
	sslv2 := []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}
	tests := []struct {
		name   string
		client []byte
		want   string
	}{
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), `first bytes "GET / HTTP/1.1" look like HTTP, not a TLS record`},
		{"HTTP2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), `first bytes "PRI * HTTP/2.0" look like HTTP`},
		{"SSH", []byte("SSH-2.0-OpenSSH_9.6\r\n"), `first bytes "SSH-2.0-OpenSSH_9.6" look like SSH`},
		{"SSLv2 ClientHello", sslv2, "first bytes 80 2e 01 03 01 are an SSLv2 ClientHello (version 0x0301), not a TLS record"},
		{"text", []byte("hello\n"), `first bytes "hello" are text, not a TLS record`},
		{"application data first", []byte{0x17, 0x03, 0x03, 0x00, 0x10}, "first bytes 17 03 03 00 10 are not a TLS record (content type 0x17)"},
		{"bad version", []byte{0x16, 0x00, 0x01, 0x00, 0x10}, "first bytes 16 00 01 00 10 are not a TLS record: version major byte 0x00, want 0x03"},
		{"huge length", []byte{0x16, 0x03, 0x01, 0xff, 0xff, 0x01}, "first bytes 16 03 01 ff ff 01 are not a TLS record: length 65535 exceeds the 18432-byte maximum"},
		{"empty record", []byte{0x16, 0x03, 0x01, 0x00, 0x00}, "are not a TLS record: empty handshake record"},
		{"binary", []byte{0x00, 0x01, 0x02}, "first bytes 00 01 02 are not a TLS record (content type 0x00)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(0)
			if more := tr.Feed(ClientToServer, tt.client, 0); more {
				t.Error("Feed wants more bytes of a non-TLS stream")
			}
			info := tr.Info()
			if !strings.Contains(info.NotTLS, tt.want) || info.Err != nil {
				t.Errorf("NotTLS = %q, Err = %v; want %q", info.NotTLS, info.Err, tt.want)
			}
			if tr.Feed(ServerToClient, []byte("HTTP/1.1 400 Bad Request\r\n"), 1) {
				t.Error("server direction still wanted after NotTLS")
			}
		})
	}
}

// TestTrackerFirstByte: a stream is judged on its first byte, yet a record
// header arriving one byte at a time is fine.
func TestTrackerFirstByte(t *testing.T) {
	tr := NewTracker(0)
	if tr.Feed(ClientToServer, []byte("G"), 0) || tr.Info().NotTLS == "" {
		t.Fatalf("one byte 'G' not rejected: %+v", tr.Info())
	}
	msg := readHex(t, "clienthello/ja3rs-firefox.hex")
	rec := makeRecords(recordHandshake, msg, 1<<14)
	tr = NewTracker(0)
	for _, chunk := range [][]byte{rec[:1], rec[1:5], rec[5:]} {
		if !tr.Feed(ClientToServer, chunk, 0) {
			t.Fatalf("Feed refused a valid header chunk: %+v", tr.Info())
		}
	}
	if tr.Info().ClientHello == nil {
		t.Fatal("no ClientHello")
	}
}

func TestTrackerServerSide(t *testing.T) {
	// warn is a plaintext warning alert, to get past the first record.
	warn := func() []byte { return []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00} }
	ch := makeRecords(recordHandshake, readHex(t, "clienthello/ja3rs-firefox.hex"), 1<<14)
	tests := []struct {
		name     string
		clientFn bool // client sends its ClientHello first
		server   []byte
		notTLS   string
		err      string
		alert    string
	}{
		{name: "server speaks first", server: []byte("220 mail.example.com ESMTP\r\n"),
			notTLS: `server spoke first: first bytes "220 mail.example.com ESMTP" are text`},
		{name: "HTTP answer to a ClientHello", clientFn: true, server: []byte("HTTP/1.1 400 Bad Request\r\n\r\n"),
			err: `server stream: tlsinfo: malformed: first bytes "HTTP/1.1 400 Bad Request" look like HTTP`},
		{name: "plaintext alert", clientFn: true, server: []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28},
			alert: "fatal handshake_failure (40)"},
		{name: "warning then fatal alert", clientFn: true, server: []byte{0x15, 0x03, 0x03, 0x00, 0x04, 0x01, 0x70, 0x02, 0x46},
			alert: "fatal protocol_version (70)"},
		{name: "certificate before server_hello", clientFn: true, server: makeRecords(recordHandshake, []byte{11, 0, 0, 3, 0, 0, 0}, 100),
			err: "server's first handshake message is certificate, want server_hello"},
		{name: "CCS before server_hello", clientFn: true, server: append(warn(), 0x14, 0x03, 0x03, 0x00, 0x01, 0x01),
			err: "change_cipher_spec at stream offset 7 before the server_hello", alert: "warning close_notify (0)"},
		{name: "malformed server_hello", clientFn: true, server: makeRecords(recordHandshake, []byte{2, 0, 0, 2, 3, 3}, 100),
			err: "tlsinfo: malformed server_hello: bad random at byte 6 of 6"},
		{name: "unknown content type", clientFn: true, server: append(warn(), 0x63, 0x03, 0x03),
			err: "record header at stream offset 7 (63): unknown content type 0x63", alert: "warning close_notify (0)"},
		{name: "oversized record", clientFn: true, server: append(warn(), 0x17, 0x03, 0x03, 0x48, 0x01),
			err: "length 18433 exceeds the 18432-byte maximum", alert: "warning close_notify (0)"},
		{name: "bad CCS length", clientFn: true, server: append(warn(), 0x14, 0x03, 0x03, 0x00, 0x02, 0x01, 0x01),
			err: "change_cipher_spec record at stream offset 7 is 2 bytes, want 1", alert: "warning close_notify (0)"},
		{name: "alert inside a fragmented message", clientFn: true,
			server: append(makeRecords(recordHandshake, []byte{2, 0, 0, 40, 3, 3}, 100), 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28),
			err:    "alert record at stream offset 11 interrupts a fragmented handshake message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(0)
			if tt.clientFn {
				tr.Feed(ClientToServer, ch, 0)
			}
			tr.Feed(ServerToClient, tt.server, 1)
			info := tr.Info()
			errText := ""
			if info.Err != nil {
				errText = info.Err.Error()
			}
			if !strings.Contains(info.NotTLS, tt.notTLS) || tt.notTLS == "" && info.NotTLS != "" {
				t.Errorf("NotTLS = %q, want %q", info.NotTLS, tt.notTLS)
			}
			if !strings.Contains(errText, tt.err) || tt.err == "" && info.Err != nil {
				t.Errorf("Err = %q, want %q", errText, tt.err)
			}
			if info.ServerAlert != tt.alert {
				t.Errorf("ServerAlert = %q, want %q", info.ServerAlert, tt.alert)
			}
		})
	}
}

func TestTrackerTruncated(t *testing.T) {
	rec := makeRecords(recordHandshake, readHex(t, "clienthello/ja3rs-chrome-grease.hex"), 1<<14)
	tests := []struct {
		cut  int
		want string
	}{
		{3, "3 of 5 bytes into a record header at stream offset 0"},
		{5, "0 of 512 bytes into a handshake record"},
		{7, "2 of 512 bytes into a handshake record"},
		{9, "4 of 512 bytes into a handshake record"},
		{len(rec) - 1, "511 of 512 bytes into a handshake record"},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.cut), func(t *testing.T) {
			tr := NewTracker(0)
			tr.Feed(ClientToServer, rec[:tt.cut], 0)
			tr.EOF(ClientToServer, 1)
			err := tr.Info().Err
			if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Err = %v, want ErrTruncated with %q", err, tt.want)
			}
		})
	}
	t.Run("message across records", func(t *testing.T) {
		msg := readHex(t, "clienthello/ja3rs-chrome-grease.hex")
		tr := NewTracker(0)
		tr.Feed(ClientToServer, makeRecords(recordHandshake, msg[:100], 1<<14), 0)
		tr.EOF(ClientToServer, 1)
		if err := tr.Info().Err; !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "100 of 512 bytes into a client_hello message") {
			t.Errorf("Err = %v", err)
		}
	})
	t.Run("nothing sent", func(t *testing.T) {
		tr := NewTracker(0)
		tr.EOF(ClientToServer, 1)
		if info := tr.Info(); info.NotTLS != "client closed without sending any bytes" || info.Err != nil {
			t.Errorf("NotTLS = %q, Err = %v", info.NotTLS, info.Err)
		}
	})
	t.Run("clean end", func(t *testing.T) {
		tr := NewTracker(0)
		tr.Feed(ClientToServer, rec, 0)
		tr.EOF(ClientToServer, 1)
		if err := tr.Info().Err; err != nil {
			t.Errorf("Err = %v after a whole record", err)
		}
	})
}

func TestTrackerBufferLimit(t *testing.T) {
	msg := readHex(t, "clienthello/smithproxy-ja4-1.hex") // 652 bytes
	for _, size := range []int{100, 1 << 14} {
		tr := NewTracker(600)
		tr.Feed(ClientToServer, makeRecords(recordHandshake, msg, size), 0)
		err := tr.Info().Err
		if !errors.Is(err, ErrBufferLimit) || !strings.Contains(err.Error(), "client_hello message of 652 bytes, limit 600") {
			t.Errorf("records of %d: Err = %v, want ErrBufferLimit", size, err)
		}
	}
}

func TestTrackerGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		data := make([]byte, 1+rng.IntN(300))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if i%2 == 0 {
			data[0] = recordHandshake // get past the first-byte check
		}
		tr := NewTracker(1024)
		tr.Feed(ClientToServer, data, 0)
		tr.Feed(ServerToClient, data, 1)
		tr.EOF(ClientToServer, 2)
		tr.EOF(ServerToClient, 2)
		if info := tr.Info(); info.NotTLS == "" && info.Err == nil {
			t.Errorf("random bytes % x accepted", data)
		}
	}
}

// TestTrackerConcurrent feeds both directions from their own goroutines,
// in causal order, while a third reads snapshots: for the race detector.
func TestTrackerConcurrent(t *testing.T) {
	p := newPKI(t)
	f := scenarioNamed(t, "TLS1.3").run(t, p)
	want := summary(replay(f, 0, nil).Info())
	tr := NewTracker(0)
	turn := [2]chan int{make(chan int), make(chan int)}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(3)
	for dir := range 2 {
		go func() {
			defer wg.Done()
			for i := range turn[dir] {
				tr.Feed(Direction(dir), f[i].data, at(i))
				turn[dir] <- i
			}
		}()
	}
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_ = tr.Info()
			}
		}
	}()
	for i, e := range f {
		turn[e.dir] <- i
		<-turn[e.dir]
	}
	tr.EOF(ClientToServer, at(len(f)))
	tr.EOF(ServerToClient, at(len(f)))
	close(turn[0])
	close(turn[1])
	close(stop)
	wg.Wait()
	if got := summary(tr.Info()); got != want {
		t.Errorf("concurrent feed differs:\n%s\nwant:\n%s", got, want)
	}
}

// TestTrackerDoneIsCheap: once a direction is finished Feed is an atomic
// load and allocates nothing.
func TestTrackerDoneIsCheap(t *testing.T) {
	p := newPKI(t)
	f := scenarioNamed(t, "TLS1.3").run(t, p)
	tr := NewTracker(0)
	for i, e := range f {
		tr.Feed(e.dir, e.data, at(i))
	}
	chunk := bytes.Repeat([]byte{0xff}, 1024) // not even TLS
	for _, dir := range []Direction{ClientToServer, ServerToClient} {
		if tr.Feed(dir, chunk, time.Second) {
			t.Fatalf("%s direction still wants bytes after the echo", dir)
		}
		if n := testing.AllocsPerRun(100, func() { tr.Feed(dir, chunk, time.Second) }); n != 0 {
			t.Errorf("%s: %v allocations per finished Feed", dir, n)
		}
	}
	if info := tr.Info(); info.Err != nil {
		t.Errorf("bytes after the end were parsed: %v", info.Err)
	}
}
