package wiretest

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/testca"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// TestMITMServerHelloAgainstTheWire: in MITM the event's tls object is the
// proxy's own handshake with the server (what ATS judges). crypto/tls does
// not say when the ServerHello arrived, so the proxy reads that leg's
// handshake off its own socket; the capture of the upstream leg and
// tshark's JA3S are the oracle.
func TestMITMServerHelloAgainstTheWire(t *testing.T) {
	attempts(t, func(t *testing.T, late *lateTimes) {
		openssl := testtool.Need(t, "openssl")
		tshark := testtool.Need(t, "tshark")
		serverCA := testpki.NewCA(t, "wiretest CA")
		certFile, keyFile := testpki.WriteFiles(t, serverCA.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256}))
		server := netip.MustParseAddrPort(testtool.OpenSSLServer(t, "-cert", certFile, "-key", keyFile, "-www"))
		_, iss := testca.New(t)
		p := startProxyWith(t, func(c *config.Config) {
			c.MITM.Enabled = true
			c.MITM.InsecureUpstream = true // the server's CA is the test's
		}, proxy.Options{MITM: iss})
		cp := capture(t, p.addr, server)
		cmd := exec.Command(openssl, "s_client", "-proxy", p.addr.String(), "-connect", fmt.Sprintf("localhost:%d", server.Port()),
			"-servername", "localhost", "-ign_eof")
		cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl s_client: %v\n%s", err, out)
		}
		ev := p.event()
		tr := stopCapture(t, cp)
		if ev.Kind != "mitm" || ev.TLS == nil {
			t.Fatalf("event kind %q tls %+v, want a decrypted connection", ev.Kind, ev.TLS)
		}
		ups := tr.ConnTo(server)
		if len(ups) != 1 {
			t.Fatalf("the capture has %d connections to the server, want 1", len(ups))
		}
		up := ups[0]
		chs := handshakeRecordsAt(up.Client, 0, 1, ev.Start)
		shs := handshakeRecordsAt(up.Server, 0, 2, ev.Start)
		if len(chs) != 1 || len(shs) != 1 {
			t.Fatalf("the upstream leg shows %d ClientHellos and %d ServerHellos, want 1 and 1", len(chs), len(shs))
		}
		tl := ev.TLS
		late.within(t, "client_hello_ms", tl.ClientHelloMS, &chs[0], finTolerance, finTolerance)
		late.within(t, "server_hello_ms", tl.ServerHelloMS, &shs[0], finTolerance, finTolerance)

		path := filepath.Join(t.TempDir(), "up.pcapng")
		if err := tr.WritePcapng(path); err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(int(server.Port()))
		out, err := exec.Command(tshark, "-r", path, "-d", "tcp.port=="+port+",tls",
			"-Y", "tcp.srcport=="+port+" && tls.handshake.type==2", "-T", "fields", "-e", "tls.handshake.ja3s").Output()
		if err != nil {
			t.Fatalf("tshark: %v", err)
		}
		if want := strings.TrimSpace(string(out)); tl.JA3SHash != want || want == "" {
			t.Errorf("ja3s_hash %q, tshark reads %q from the upstream leg", tl.JA3SHash, want)
		}
		if tl.ServerHello == nil || tl.Version != "TLS 1.3" {
			t.Errorf("server_hello %+v version %q, want the upstream's TLS 1.3 ServerHello", tl.ServerHello, tl.Version)
		}
	})
}
