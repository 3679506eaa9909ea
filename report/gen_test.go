package report

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
)

// genReader streams n synthetic events as JSON lines, made on demand so
// that the test input itself is never held whole. onLine, if set, is called
// before each line is made, with the line's index.
type genReader struct {
	n, i   int
	buf    []byte
	onLine func(i int)
}

func (g *genReader) Read(p []byte) (int, error) {
	for len(g.buf) == 0 {
		if g.i == g.n {
			return 0, io.EOF
		}
		if g.onLine != nil {
			g.onLine(g.i)
		}
		b, err := json.Marshal(genEvent(g.i))
		if err != nil {
			return 0, err
		}
		g.buf = append(b, '\n')
		g.i++
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// genEvent is a plausible event, tunnel or http, over 20 hosts; its
// ClientHello makes it as heavy as a real one.
func genEvent(i int) *event.Event {
	f := func(v float64) *float64 { return &v }
	start := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC).Add(time.Duration(i) * 7 * time.Millisecond)
	host := fmt.Sprintf("h%02d.example.com", i%20)
	dns, conn := float64(i%50)/3, 10+float64(i%97)/2
	tcp := event.TCP{
		DNSMS: f(dns), ConnectMS: f(conn), ConnectAt: 0.5 + dns + conn, RemoteAddr: "203.0.113.7:443",
		FirstFIN: event.SideClient, ClientFINMS: f(900), ServerFINMS: f(901), HalfCloseMS: f(1),
		BytesUp: 1200, BytesDown: 54000, DurationMS: 1000 + float64(i%1000),
	}
	ev := &event.Event{
		ID: fmt.Sprintf("g%07d", i), Start: start, End: start.Add(time.Second),
		Client: "192.0.2.1:50000", Target: host + ":443",
	}
	if i%3 == 2 {
		ev.Kind = event.KindHTTP
		ev.Target = host + ":80"
		ev.Upstreams = []event.Upstream{{ID: 1, Target: ev.Target, TCP: tcp}}
		ev.HTTP = []event.HTTP{{
			Method: "GET", URL: "http://" + host + "/x?i=" + fmt.Sprint(i), Proto: "HTTP/1.1", Status: 200,
			UpstreamID: 1, StartMS: 0.3, SendMS: 0.2, WaitMS: f(20 + float64(i%200)), ReceiveMS: f(3), Bytes: 4000,
		}}
		return ev
	}
	ch := tcp.ConnectAt + 0.5
	hs := 30 + float64(i%300)/10
	ev.Kind = event.KindTunnel
	ev.TCP = &tcp
	ev.TLS = &event.TLS{
		SNI: host, Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256", ALPN: "h2",
		ClientHello: &event.ClientHello{
			LegacyVersion: "TLS 1.2", SupportedVersions: []string{"GREASE", "TLS 1.3", "TLS 1.2"},
			CipherSuites: []string{"GREASE", "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
				"TLS_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
			Extensions: []string{"GREASE", "server_name", "extended_master_secret", "renegotiation_info",
				"supported_groups", "ec_point_formats", "session_ticket", "application_layer_protocol_negotiation",
				"status_request", "signature_algorithms", "signed_certificate_timestamp", "key_share",
				"psk_key_exchange_modes", "supported_versions", "compress_certificate"},
			SNI: host, ALPN: []string{"h2", "http/1.1"}, SupportedGroups: []string{"GREASE", "X25519", "P-256", "P-384"},
			SignatureAlgorithms: []string{"ecdsa_secp256r1_sha256", "rsa_pss_rsae_sha256", "rsa_pkcs1_sha256"},
			KeyShares:           []string{"GREASE", "X25519"}, Size: 512,
		},
		ClientHelloMS: f(ch), ServerHelloMS: f(ch + hs/2), HandshakeMS: f(hs), HandshakeDone: f(ch + hs),
		AppDataUpMS: f(ch + hs + 0.4), AppDataDownMS: f(ch + hs + 0.4 + 40 + float64(i%400)/4),
		JA3Hash: "773906b0efdefa24a7f2b8eb6985bf37", JA4: "t13d1516h2_8daaf6152771_e5627efa2ab1",
	}
	return ev
}
