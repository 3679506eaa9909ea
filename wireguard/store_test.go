package wireguard

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"html"
	"image"
	"image/color"
	"image/png"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestKeyPublic derives a public key as RFC 7748 §6.1's Alice does.
func TestKeyPublic(t *testing.T) {
	var k Key
	hex.Decode(k[:], []byte("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	pub := k.Public()
	if got := hex.EncodeToString(pub[:]); got != "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" {
		t.Errorf("public key %s", got)
	}
	back, err := ParseKey(pub.String())
	if err != nil || back != pub {
		t.Errorf("ParseKey(String()) = %v, %v", back, err)
	}
	if _, err := ParseKey("c2hvcnQ="); err == nil {
		t.Error("a 5-byte key parsed")
	}
}

func TestStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wireguard")
	s := NewStore(dir)
	k1, err := s.ServerKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := s.ServerKey()
	if k1 != k2 {
		t.Error("the server key changed between calls")
	}
	network := netip.MustParsePrefix("10.64.0.0/24")
	network6 := netip.MustParsePrefix("fd64::/64")
	a, err := s.AddPeer("phone", network, network6)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.AddPeer("tablet", network, netip.Prefix{})
	if got := a.Addresses; len(got) != 2 || got[0] != netip.MustParseAddr("10.64.0.2") || got[1] != netip.MustParseAddr("fd64::2") {
		t.Errorf("phone addresses %v", got)
	}
	if b.Addresses[0] != netip.MustParseAddr("10.64.0.3") || a.PublicKey != a.PrivateKey.Public() || a.PrivateKey == b.PrivateKey {
		t.Errorf("tablet %+v", b)
	}
	for _, tc := range []struct{ name, want string }{
		{"phone", "exists"},
		{"", "peer name"},
		{"../etc", "peer name"},
	} {
		if _, err := s.AddPeer(tc.name, network, netip.Prefix{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddPeer(%q) = %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := s.RemovePeer("phone"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemovePeer("phone"); err == nil {
		t.Error("removed a peer twice")
	}
	c, _ := s.AddPeer("laptop", network, netip.Prefix{})
	if c.Addresses[0] != netip.MustParseAddr("10.64.0.2") {
		t.Errorf("a removed peer's address is not reused: %v", c.Addresses)
	}
	peers, err := s.Peers()
	if err != nil || len(peers) != 2 || peers[0].Name != "tablet" || peers[1].Name != "laptop" || peers[1].PrivateKey != c.PrivateKey {
		t.Errorf("peers %+v, %v", peers, err)
	}
	// Keys are secrets: the directory and both files are the owner's only.
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {filepath.Join(dir, serverKeyFile), 0o600}, {filepath.Join(dir, peersFile), 0o600}} {
		if fi, err := os.Stat(f.path); err != nil || fi.Mode() != f.mode {
			t.Errorf("%s: mode %v, %v; want %v", f.path, fi.Mode(), err, f.mode)
		}
	}
	full := NewStore(t.TempDir())
	tiny := netip.MustParsePrefix("10.9.0.0/30") // .1 the server, .2 one peer, .3 broadcast
	if _, err := full.AddPeer("one", tiny, netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	if _, err := full.AddPeer("two", tiny, netip.Prefix{}); err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("second peer in a /30: %v", err)
	}
}

// TestQR decodes the terminal QR code with zbarimg (zbar-tools), as the
// WireGuard app's scanner reads it from a screen.
func TestQR(t *testing.T) {
	s := NewStore(t.TempDir())
	p, err := s.AddPeer("phone", netip.MustParsePrefix("10.64.0.0/24"), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ClientConfig(p, mustServerKey(t, s), "192.168.1.10:51820", []netip.Addr{netip.MustParseAddr("10.64.0.1")}, 1420)
	qr, err := QR(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(file, terminalToPNG(t, qr), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zbarimg", "--raw", "-q", file).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	if got := strings.TrimSuffix(string(out), "\n"); got != cfg {
		t.Errorf("QR code reads\n%s\nwant\n%s", got, cfg)
	}
}

// terminalToPNG draws half-block text as a dark-background terminal
// shows it: the block glyphs light, the rest dark.
func terminalToPNG(t *testing.T, text string) []byte {
	const scale = 4
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	width := len([]rune(lines[0]))
	img := image.NewGray(image.Rect(0, 0, width*scale, len(lines)*2*scale))
	for y, line := range lines {
		for x, r := range []rune(line) {
			top, bottom := r == '█' || r == '▀', r == '█' || r == '▄'
			for i, light := range []bool{top, bottom} {
				c := color.Gray{0}
				if light {
					c = color.Gray{255}
				}
				for dy := range scale {
					for dx := range scale {
						img.SetGray(x*scale+dx, (2*y+i)*scale+dy, c)
					}
				}
			}
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestSetupHandler serves the devices' page; its QR codes decode (zbarimg)
// to the configs shown beside them.
func TestSetupHandler(t *testing.T) {
	s := NewStore(t.TempDir())
	p, err := s.AddPeer("phone", netip.MustParsePrefix("10.64.0.0/24"), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ClientConfig(p, mustServerKey(t, s), "192.168.1.10:51820", []netip.Addr{netip.MustParseAddr("10.64.0.1")}, 1420)
	rec := httptest.NewRecorder()
	SetupHandler(s, func(Peer) (string, error) { return cfg, nil }).ServeHTTP(rec, httptest.NewRequest("GET", "/wireguard/", nil))
	body := html.UnescapeString(rec.Body.String())
	if rec.Code != 200 || !strings.Contains(body, "<h2>phone</h2>") || !strings.Contains(body, cfg) {
		t.Fatalf("%d\n%s", rec.Code, body)
	}
	m := regexp.MustCompile(`src="data:image/png;base64,([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no QR image")
	}
	png, err := base64.StdEncoding.DecodeString(m[1])
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zbarimg", "--raw", "-q", file).Output()
	if err != nil || strings.TrimSuffix(string(out), "\n") != cfg {
		t.Errorf("QR code reads %q, %v", out, err)
	}
}
