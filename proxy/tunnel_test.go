package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

func TestTunnelTLS(t *testing.T) {
	h := startProxy(t, nil)
	for _, tc := range []struct {
		name       string
		key        testpki.KeySpec
		server     *tls.Config
		clientALPN []string
		wantVer    string
		wantCipher string
		wantALPN   string
		wantChain  string
		wantGroup  bool
	}{
		{name: "tls12 rsa ecdhe", key: testpki.RSA2048, server: &tls.Config{MaxVersion: tls.VersionTLS12},
			wantVer: "TLS 1.2", wantCipher: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", wantChain: event.ChainObserved, wantGroup: true},
		{name: "tls12 ecdsa ecdhe", key: testpki.ECDSA256, server: &tls.Config{MaxVersion: tls.VersionTLS12},
			wantVer: "TLS 1.2", wantCipher: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", wantChain: event.ChainObserved, wantGroup: true},
		{name: "tls12 rsa key exchange", key: testpki.RSA2048, server: &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}},
			wantVer: "TLS 1.2", wantCipher: "TLS_RSA_WITH_AES_128_GCM_SHA256", wantChain: event.ChainObserved},
		{name: "tls13", key: testpki.ECDSA256, server: &tls.Config{MinVersion: tls.VersionTLS13},
			wantVer: "TLS 1.3", wantCipher: "TLS_AES_128_GCM_SHA256", wantChain: event.ChainProbed, wantGroup: true},
		{name: "tls12 alpn h2", key: testpki.ECDSA256, server: &tls.Config{MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}, clientALPN: []string{"h2", "http/1.1"},
			wantVer: "TLS 1.2", wantCipher: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", wantALPN: "h2", wantChain: event.ChainObserved, wantGroup: true},
		{name: "tls12 alpn http/1.1", key: testpki.ECDSA256, server: &tls.Config{MaxVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}, clientALPN: []string{"h2", "http/1.1"},
			wantVer: "TLS 1.2", wantCipher: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", wantALPN: "http/1.1", wantChain: event.ChainObserved, wantGroup: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.server.Clone()
			cfg.Certificates = []tls.Certificate{h.ca.Leaf(t, testpki.LeafOpts{Key: tc.key})}
			srv := testpki.StartTLS(t, cfg, nil)
			h.tlsThrough(srv.Addr, &tls.Config{ServerName: "localhost", RootCAs: h.ca.Pool, NextProtos: tc.clientALPN,
				CipherSuites: tc.server.CipherSuites})
			ev := h.event()
			if ev.Kind != event.KindTunnel || ev.Target != srv.Addr || ev.Error != "" {
				t.Fatalf("event kind=%s target=%s error=%q", ev.Kind, ev.Target, ev.Error)
			}
			tl := ev.TLS
			if tl == nil {
				t.Fatalf("no tls in event; tls_absent=%q", ev.TLSAbsent)
			}
			if tl.Version != tc.wantVer || tl.Cipher != tc.wantCipher || tl.ALPN != tc.wantALPN {
				t.Errorf("version=%q cipher=%q alpn=%q, want %q %q %q", tl.Version, tl.Cipher, tl.ALPN, tc.wantVer, tc.wantCipher, tc.wantALPN)
			}
			if tl.SNI != "localhost" || tl.ClientHello == nil || tl.ServerHello == nil {
				t.Errorf("sni=%q client_hello=%v server_hello=%v", tl.SNI, tl.ClientHello != nil, tl.ServerHello != nil)
			}
			if tc.wantGroup && tl.KeyExchangeGroup == "" {
				t.Errorf("no key exchange group")
			}
			if tl.ChainSource != tc.wantChain || len(tl.Chain) != 2 {
				t.Errorf("chain_source=%q len=%d (%s), want %q len 2", tl.ChainSource, len(tl.Chain), tl.ChainError, tc.wantChain)
			}
			if tl.Verified == nil || !*tl.Verified {
				t.Errorf("verified=%v error=%q", tl.Verified, tl.VerifyError)
			}
			if tl.JA3Hash == "" || tl.JA4 == "" || tl.JA3S == "" {
				t.Errorf("fingerprints missing: ja3=%q ja4=%q ja3s=%q", tl.JA3Hash, tl.JA4, tl.JA3S)
			}
			for name, v := range map[string]*float64{"client_hello_ms": tl.ClientHelloMS, "server_hello_ms": tl.ServerHelloMS, "handshake_ms": tl.HandshakeMS, "first_app_data_up_ms": tl.AppDataUpMS} {
				if v == nil || *v < 0 {
					t.Errorf("%s = %v", name, v)
				}
			}
			tcp := ev.TCP
			if tcp == nil || tcp.ConnectMS == nil || tcp.DNSMS != nil || tcp.FirstFIN != event.SideClient || tcp.BytesUp == 0 || tcp.BytesDown == 0 {
				t.Errorf("tcp = %+v", tcp)
			}
		})
	}
}

// echo writes p and reads it back.
func echo(t testing.TB, c io.ReadWriter, p []byte) {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(p))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("echo: got %q, %v", got, err)
	}
}

// TestTunnelByteExact sends several MB each way through a TLS tunnel and
// compares hashes: the proxy must not change a byte, before or after it
// switches to splice.
func TestTunnelByteExact(t *testing.T) {
	h := startProxy(t, nil)
	const size = 8 << 20
	down := make([]byte, size)
	_, _ = rand.Read(down)
	gotUp := make(chan [32]byte, 1)
	cfg := tlsServerConfig(h.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256}))
	srv := testpki.StartTLS(t, cfg, func(c *tls.Conn) {
		hs := sha256.New()
		if n, err := io.CopyN(hs, c, size); err != nil {
			if n == 0 {
				return // the proxy's side probe for the TLS 1.3 chain
			}
			t.Errorf("server read %d: %v", n, err)
		}
		var sum [32]byte
		copy(sum[:], hs.Sum(nil))
		gotUp <- sum
		_, _ = c.Write(down)
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	up := make([]byte, size)
	_, _ = rand.Read(up)
	raw := h.connect(srv.Addr)
	c := tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: h.ca.Pool})
	go func() { _, _ = c.Write(up) }()
	hs := sha256.New()
	n, err := io.Copy(hs, c)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if sha256.Sum256(up) != <-gotUp {
		t.Error("upload changed in transit")
	}
	if wantDown := sha256.Sum256(down); !bytes.Equal(hs.Sum(nil), wantDown[:]) {
		t.Error("download changed in transit")
	}
	_ = raw.CloseWrite()
	_, _ = io.Copy(io.Discard, raw)
	c.Close()
	ev := h.event()
	if ev.TCP.BytesUp < size || ev.TCP.BytesDown < size {
		t.Errorf("bytes up=%d down=%d, want >= %d", ev.TCP.BytesUp, ev.TCP.BytesDown, size)
	}
	// The server's tls CloseWrite is a close_notify, not a FIN: the client's
	// CloseWrite is the first FIN.
	if ev.TCP.FirstFIN != event.SideClient {
		t.Errorf("first_fin = %q, want client", ev.TCP.FirstFIN)
	}
}

func TestTunnelClose(t *testing.T) {
	h := startProxy(t, nil)
	for _, tc := range []struct {
		name     string
		server   func(c *net.TCPConn)
		client   func(t *testing.T, c *net.TCPConn)
		firstFIN string
		rst      string
		half     bool
	}{
		{
			name: "server closes first",
			server: func(c *net.TCPConn) {
				_, _ = c.Write([]byte("bye\n"))
				_ = c.CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			},
			client: func(t *testing.T, c *net.TCPConn) {
				b, _ := io.ReadAll(c) // until the server's FIN
				if string(b) != "bye\n" {
					t.Errorf("read %q", b)
				}
				time.Sleep(20 * time.Millisecond)
				_ = c.CloseWrite()
			},
			firstFIN: event.SideServer, half: true,
		},
		{
			name: "client closes first",
			server: func(c *net.TCPConn) {
				b, _ := io.ReadAll(c)
				time.Sleep(20 * time.Millisecond)
				_, _ = c.Write(b)
			},
			client: func(t *testing.T, c *net.TCPConn) {
				_, _ = c.Write([]byte("ping"))
				_ = c.CloseWrite()
				if b, _ := io.ReadAll(c); string(b) != "ping" {
					t.Errorf("half-closed tunnel returned %q, want ping", b)
				}
			},
			firstFIN: event.SideClient, half: true,
		},
		{
			name: "server resets",
			server: func(c *net.TCPConn) {
				buf := make([]byte, 4)
				_, _ = io.ReadFull(c, buf)
				_ = c.SetLinger(0)
				_ = c.Close()
			},
			client: func(t *testing.T, c *net.TCPConn) {
				_, _ = c.Write([]byte("ping"))
				_, err := io.ReadAll(c)
				if err == nil || !strings.Contains(err.Error(), "reset") {
					t.Errorf("client should see the reset, got %v", err)
				}
			},
			rst: event.SideServer,
		},
		{
			name: "client resets",
			server: func(c *net.TCPConn) {
				_, _ = io.ReadAll(c)
			},
			client: func(t *testing.T, c *net.TCPConn) {
				_, _ = c.Write([]byte("ping"))
				time.Sleep(20 * time.Millisecond)
				_ = c.SetLinger(0)
			},
			rst: event.SideClient,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tcpServer(t, tc.server)
			c := h.connect(addr)
			tc.client(t, c)
			c.Close()
			ev := h.event()
			tcp := ev.TCP
			if tcp.RST != tc.rst {
				t.Errorf("rst = %q, want %q", tcp.RST, tc.rst)
			}
			if tc.firstFIN != "" && tcp.FirstFIN != tc.firstFIN {
				t.Errorf("first_fin = %q, want %q", tcp.FirstFIN, tc.firstFIN)
			}
			if tc.half && (tcp.HalfCloseMS == nil || *tcp.HalfCloseMS < 10) {
				t.Errorf("half_close_ms = %v, want about 20", tcp.HalfCloseMS)
			}
			if ev.TLS != nil || ev.TLSAbsent == "" {
				t.Errorf("plain TCP tunnel: tls=%v tls_absent=%q", ev.TLS, ev.TLSAbsent)
			}
		})
	}
}

func TestTunnelNotTLS(t *testing.T) {
	h := startProxy(t, nil)
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	for _, payload := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\x00\x05garbage-after-a-record-header", "\x00\xff\xfe random"} {
		c := h.connect(addr)
		echo(t, c, []byte(payload))
		c.Close()
		ev := h.event()
		if ev.TLS != nil && ev.TLS.ClientHello != nil {
			t.Errorf("%q parsed as a ClientHello", payload)
		}
		if ev.TLS == nil && ev.TLSAbsent == "" {
			t.Errorf("%q: tls is null but tls_absent says nothing", payload)
		}
		if ev.TCP.BytesUp != int64(len(payload)) || ev.TCP.BytesDown != int64(len(payload)) {
			t.Errorf("%q: bytes up=%d down=%d", payload, ev.TCP.BytesUp, ev.TCP.BytesDown)
		}
	}
}

// TestTunnelEarlyBytes sends the ClientHello in the same write as the
// CONNECT, before the 200: those bytes must reach the server.
func TestTunnelEarlyBytes(t *testing.T) {
	h := startProxy(t, nil)
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\nearly bytes"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 OK\r\n\r\nearly bytes"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("got %q, %v", got, err)
	}
	c.Close()
	if ev := h.event(); ev.TCP.BytesUp != int64(len("early bytes")) {
		t.Errorf("bytes_up = %d", ev.TCP.BytesUp)
	}
}

func TestTunnelDialFailure(t *testing.T) {
	h := startProxy(t, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"))
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.1 502 Bad Gateway") || !strings.Contains(string(b), "refused") {
		t.Errorf("reply = %q", b)
	}
	ev := h.event()
	if !strings.Contains(ev.Error, "refused") || ev.TCP == nil || ev.TCP.ConnectMS != nil {
		t.Errorf("event error=%q tcp=%+v", ev.Error, ev.TCP)
	}
}
