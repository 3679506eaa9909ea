package onboard

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/internal/testpki"
)

func TestIsSetup(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		want           bool
	}{
		{"GET", "http://inspectproxy.setup/", true},
		{"GET", "http://INSPECTPROXY.SETUP./proxy.pac", true},
		{"GET", "/", true}, // straight to the proxy
		{"GET", "/inspectproxy.mobileconfig", true},
		{"GET", "http://example.com/", false},
		{"GET", "http://inspectproxy.setup.example.com/", false},
		{"CONNECT", "inspectproxy.setup:443", false},
	} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.method + " " + tc.target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			t.Fatal(err)
		}
		if got := IsSetup(r); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.method, tc.target, got, tc.want)
		}
	}
}

func TestPAC(t *testing.T) {
	got := string(PAC([]string{"192.0.2.10:8080", "[2001:db8::1]:8080"}, []string{"*.apple.com", `we"ird`}))
	for _, want := range []string{
		`if (shExpMatch(host, "*.apple.com")) return "DIRECT";`,
		`if (shExpMatch(host, "we\"ird")) return "DIRECT";`,
		`return "PROXY 192.0.2.10:8080; PROXY [2001:db8::1]:8080";`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("PAC lacks %s:\n%s", want, got)
		}
	}
}

// TestProfile checks the .mobileconfig with Python's plistlib (an
// independent plist reader) and the payload's certificate with openssl.
func TestProfile(t *testing.T) {
	ca := testpki.NewCA(t, "inspectproxy test CA")
	b, err := Profile(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Profile(ca.Cert)
	if !bytes.Equal(b, again) {
		t.Error("the profile changes between downloads: iOS would install a second one")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "p.mobileconfig")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	const script = `
import json, plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
c = p["PayloadContent"][0]
open(sys.argv[2], "wb").write(c["PayloadContent"])
out = {k: p[k] for k in ("PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID", "PayloadDisplayName")}
out["root"] = {k: c[k] for k in ("PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID", "PayloadCertificateFileName")}
print(json.dumps(out))
`
	der := filepath.Join(dir, "ca.cer")
	out, err := exec.Command("python3", "-c", script, path, der).CombinedOutput()
	if err != nil {
		t.Fatalf("plistlib: %v\n%s", err, out)
	}
	var p struct {
		PayloadType, PayloadIdentifier, PayloadUUID, PayloadDisplayName string
		PayloadVersion                                                  int
		Root                                                            struct {
			PayloadType, PayloadIdentifier, PayloadUUID, PayloadCertificateFileName string
			PayloadVersion                                                          int
		} `json:"root"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	isUUID := func(s string) bool { return len(s) == 36 && strings.Count(s, "-") == 4 && strings.ToUpper(s) == s }
	if p.PayloadType != "Configuration" || p.PayloadVersion != 1 || !strings.HasPrefix(p.PayloadIdentifier, "dev.inspectproxy.") || !isUUID(p.PayloadUUID) {
		t.Errorf("profile %+v", p)
	}
	r := p.Root
	if r.PayloadType != "com.apple.security.root" || r.PayloadVersion != 1 || !isUUID(r.PayloadUUID) || r.PayloadUUID == p.PayloadUUID ||
		r.PayloadIdentifier == p.PayloadIdentifier || !strings.HasSuffix(r.PayloadCertificateFileName, ".cer") {
		t.Errorf("root payload %+v", r)
	}
	fp, err := exec.Command("openssl", "x509", "-inform", "DER", "-in", der, "-noout", "-fingerprint", "-sha256").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, fp)
	}
	sum := sha256.Sum256(ca.Cert.Raw)
	if !strings.Contains(strings.ReplaceAll(string(fp), ":", ""), strings.ToUpper(hex.EncodeToString(sum[:]))) {
		t.Errorf("payload certificate %s is not the CA", fp)
	}
}

func TestHandler(t *testing.T) {
	ca := testpki.NewCA(t, "inspectproxy test CA")
	withCA, err := New(Options{Proxies: []string{"192.0.2.10:8080"}, CA: ca.Cert, PACDirect: []string{"*.apple.com"}})
	if err != nil {
		t.Fatal(err)
	}
	without, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{PACDirect: []string{"["}}); err == nil {
		t.Error("a bad glob was accepted")
	}
	for _, tc := range []struct {
		name    string
		h       *Handler
		method  string
		path    string
		host    string
		code    int
		ctype   string
		contain string
	}{
		{"page", withCA, "GET", "/", "", 200, "text/html; charset=utf-8", "Certificate Trust Settings"},
		{"page shows the address", withCA, "GET", "/", "", 200, "", ">192.0.2.10<"},
		{"android note", withCA, "GET", "/", "", 200, "", `certificates src="user"`},
		{"no CA", without, "GET", "/", "", 200, "", "MITM is off"},
		{"loopback only", without, "GET", "/", "", 200, "", "loopback only"},
		{"pac from where it was fetched", withCA, "GET", "/proxy.pac", "198.51.100.1:8080", 200, TypePAC, `"PROXY 198.51.100.1:8080"`},
		{"pac by name", withCA, "GET", "/proxy.pac", "inspectproxy.setup", 200, TypePAC, `"PROXY 192.0.2.10:8080"`},
		{"profile", withCA, "GET", PathProfile, "", 200, TypeProfile, "com.apple.security.root"},
		{"der", withCA, "GET", PathDER, "", 200, TypeDER, ""},
		{"pem", withCA, "GET", PathPEM, "", 200, "application/x-pem-file", "BEGIN CERTIFICATE"},
		{"no CA to download", without, "GET", PathDER, "", 404, "", "MITM is off"},
		{"post", withCA, "POST", "/", "", 405, "", ""},
		{"other path", withCA, "GET", "/x", "", 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.host != "" {
				r.Host = tc.host
			}
			w := httptest.NewRecorder()
			tc.h.ServeHTTP(w, r)
			if w.Code != tc.code || (tc.ctype != "" && w.Header().Get("Content-Type") != tc.ctype) || !strings.Contains(w.Body.String(), tc.contain) {
				t.Errorf("%d %q, want %d %q with %q:\n%.300s", w.Code, w.Header().Get("Content-Type"), tc.code, tc.ctype, tc.contain, w.Body.String())
			}
		})
	}
	w := httptest.NewRecorder()
	withCA.ServeHTTP(w, httptest.NewRequest("GET", PathDER, nil))
	if c, err := x509.ParseCertificate(w.Body.Bytes()); err != nil || !c.Equal(ca.Cert) {
		t.Errorf("DER download: %v", err)
	}
}

// TestCurlThroughProxy: curl -x sends the absolute-form request a phone's
// browser sends through the proxy; IsSetup routes it to the handler as the
// proxy does.
func TestCurlThroughProxy(t *testing.T) {
	ca := testpki.NewCA(t, "inspectproxy test CA")
	h, err := New(Options{Proxies: []string{"192.0.2.10:8080"}, CA: ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsSetup(r) {
			http.Error(w, "would be proxied", http.StatusTeapot)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	for _, tc := range []struct{ url, want string }{
		{"http://inspectproxy.setup/", "Set up this device"},
		{"http://inspectproxy.setup/proxy.pac", "PROXY 192.0.2.10:8080"},
		{"http://inspectproxy.setup/inspectproxy.mobileconfig", "<string>com.apple.security.root</string>"},
	} {
		out, err := exec.Command("curl", "-sS", "--fail", "-x", srv.URL, tc.url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("curl -x %s: %v\n%.300s", tc.url, err, out)
		}
	}
	// Straight to the proxy's address, as a phone's browser does when it
	// opens the URL of the QR code.
	out, err := exec.Command("curl", "-sS", "--fail", srv.URL+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Set up this device") {
		t.Errorf("curl %s/: %v\n%.300s", srv.URL, err, out)
	}
}

func TestLANAddrs(t *testing.T) {
	for _, tc := range []struct {
		listen string
		want   []string
	}{
		{"127.0.0.1:8080", nil},
		{"localhost:8080", nil},
		{"192.0.2.7:8080", []string{"192.0.2.7:8080"}},
		{"proxy.lan:8080", []string{"proxy.lan:8080"}},
	} {
		got, err := LANAddrs(tc.listen)
		if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("LANAddrs(%s) = %v %v, want %v", tc.listen, got, err, tc.want)
		}
	}
	all, err := LANAddrs("0.0.0.0:8080")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		h, _, _ := net.SplitHostPort(a)
		if ip := net.ParseIP(h); ip == nil || ip.IsLoopback() || ip.To4() == nil {
			t.Errorf("0.0.0.0 gave %s", a)
		}
	}
}
