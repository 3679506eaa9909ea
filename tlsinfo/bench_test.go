package tlsinfo

import (
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// BenchmarkParseClientHello parses a real 652-byte browser ClientHello
// (ECH, 17 suites, 15 extensions).
func BenchmarkParseClientHello(b *testing.B) {
	msg := readHex(b, filepath.Join("clienthello", "smithproxy-ja4-1.hex"))
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := ParseClientHello(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrackerFeed replays a real TLS 1.3 connection (handshake and one
// echo) through a new Tracker, fingerprints included.
func BenchmarkTrackerFeed(b *testing.B) {
	p := newPKI(b)
	srv := testpki.StartTLS(b, &tls.Config{Certificates: []tls.Certificate{p.ecdsa}}, nil)
	f, err := capture(b, srv.Addr, p.clientConfig(), echoOnce)
	if err != nil {
		b.Fatal(err)
	}
	total := len(f.stream(ClientToServer)) + len(f.stream(ServerToClient))
	b.ReportAllocs()
	b.SetBytes(int64(total))
	for b.Loop() {
		tr := NewTracker(0)
		for i, e := range f {
			tr.Feed(e.dir, e.data, at(i))
		}
		if tr.Info().HandshakeDoneAt < 0 {
			b.Fatal("handshake not seen")
		}
	}
}
