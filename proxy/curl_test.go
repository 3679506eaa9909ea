package proxy

import (
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testpki"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
)

// TestCurlThroughProxy runs the real curl with -x against an HTTPS server
// and reads the event a user would read.
func TestCurlThroughProxy(t *testing.T) {
	curl := testtool.Need(t, "curl")
	h := startProxy(t, nil)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello curl")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{h.ca.Leaf(t, testpki.LeafOpts{Key: testpki.ECDSA256})}}
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	for _, tc := range []struct{ name, flag, wantVer, wantJA4 string }{
		{"tls1.3", "--tlsv1.3", "TLS 1.3", "t13d"},
		{"tls1.2", "--tls-max", "TLS 1.2", "t12d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-sS", "--noproxy", "", "-x", "http://" + h.addr, "--cacert", caFile}
			if tc.flag == "--tls-max" {
				args = append(args, "--tls-max", "1.2")
			} else {
				args = append(args, tc.flag)
			}
			out, err := exec.Command(curl, append(args, url)...).CombinedOutput()
			if err != nil || string(out) != "hello curl" {
				t.Fatalf("curl: %v: %s", err, out)
			}
			ev := h.event()
			if ev.Kind != event.KindTunnel || ev.TLS == nil {
				t.Fatalf("event kind=%s tls=%v absent=%q", ev.Kind, ev.TLS, ev.TLSAbsent)
			}
			tl := ev.TLS
			if tl.SNI != "localhost" || tl.Version != tc.wantVer || tl.ALPN == "" && tc.wantVer == "TLS 1.2" {
				t.Errorf("sni=%q version=%q alpn=%q", tl.SNI, tl.Version, tl.ALPN)
			}
			if tl.ClientHello == nil || len(tl.ClientHello.ALPN) == 0 || tl.JA4 == "" || !strings.HasPrefix(tl.JA4, tc.wantJA4) {
				t.Errorf("client hello %+v ja4=%q", tl.ClientHello, tl.JA4)
			}
			if tl.Verified == nil || !*tl.Verified || len(tl.Chain) == 0 {
				t.Errorf("chain not verified: %q %s", tl.VerifyError, tl.ChainError)
			}
			if ev.TCP.FirstFIN == "" || ev.TCP.ConnectMS == nil {
				t.Errorf("tcp %+v", ev.TCP)
			}
		})
	}
}
