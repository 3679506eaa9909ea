package proxy

import (
	"crypto/tls"
	"testing"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

// BenchmarkTunnelConnection is one whole passthrough connection: CONNECT,
// a TLS 1.3 handshake (probe and verdicts cached after the first), one
// echo, the close, and the event with its ATS verdict. Profile it with
// -cpuprofile to see the proxy's share.
func BenchmarkTunnelConnection(b *testing.B) {
	h := startProxyWith(b, func(c *config.Config) { c.Log.Level = "warn" },
		Options{Log: zap.NewNop(), Checker: ats.Checker{Policy: ats.DefaultPolicy()}})
	srv := testpki.StartTLS(b, &tls.Config{Certificates: []tls.Certificate{h.ca.Leaf(b, testpki.LeafOpts{Key: testpki.ECDSA256})}}, nil)
	cfg := &tls.Config{ServerName: "localhost", RootCAs: h.ca.Pool, ClientSessionCache: nil}
	b.ReportAllocs()
	for b.Loop() {
		h.tlsThrough(srv.Addr, cfg)
		h.event()
	}
}
