package cli

import (
	"bytes"
	"context"
	"html"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/config"
)

// TestWireGuardPeers drives `inspectproxy wireguard peer ...` as a user
// does: add prints the device's config and QR code, list shows it, show
// prints the same config again, remove forgets it.
func TestWireGuardPeers(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), append(args, "--data-dir", dir, "--endpoint", "192.168.1.10"), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	added, msg, code := run("wireguard", "peer", "add", "phone")
	if code != 0 {
		t.Fatalf("peer add: %d %s", code, msg)
	}
	for _, want := range []string{"[Interface]\nPrivateKey = ", "Address = 10.64.0.2/32\nDNS = 10.64.0.1\nMTU = 1420\n", "Endpoint = 192.168.1.10:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n", "█"} {
		if !strings.Contains(added, want) {
			t.Errorf("peer add output lacks %q:\n%s", want, added)
		}
	}
	if !strings.Contains(msg, `added peer "phone" (10.64.0.2)`) {
		t.Errorf("stderr %q", msg)
	}
	if shown, _, _ := run("wireguard", "peer", "show", "phone"); shown != added {
		t.Errorf("show differs from add:\n%s\n%s", shown, added)
	}
	if text, _, _ := run("wireguard", "peer", "show", "phone", "--no-qr"); strings.Contains(text, "█") || !strings.HasPrefix(added, text) {
		t.Errorf("show --no-qr:\n%s", text)
	}
	list, _, _ := run("wireguard", "peer", "list")
	if !strings.Contains(list, "NAME") || !strings.Contains(list, "phone  10.64.0.2") {
		t.Errorf("list:\n%s", list)
	}
	if _, msg, code := run("wireguard", "peer", "add", "phone"); code == 0 || !strings.Contains(msg, "exists") {
		t.Errorf("adding phone twice: %d %s", code, msg)
	}
	if _, msg, code := run("wireguard", "peer", "remove", "phone"); code != 0 {
		t.Fatalf("remove: %s", msg)
	}
	if list, _, _ := run("wireguard", "peer", "list"); strings.Contains(list, "phone") {
		t.Errorf("list after remove:\n%s", list)
	}
	fi, err := os.Stat(filepath.Join(dir, "wireguard", "server.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("server.key: %v %v", fi, err)
	}
}

func TestServeWireGuardFlags(t *testing.T) {
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"--wireguard", ":0", "--wireguard-quic", "drop", "--events", filepath.Join(t.TempDir(), "e")}, &bytes.Buffer{}, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), `wireguard.quic "drop"`) {
		t.Errorf("code %d, stderr %q", code, stderr.String())
	}
}

// TestServeWireGuard starts serve with the WireGuard mode beside the
// proxy, as a user does: the live console shows the devices' configs at
// /setup/wireguard/, and the setup page the proxy serves its clients does
// not (they hold private keys).
func TestServeWireGuard(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("INSPECTPROXY_MITM_DATA_DIR", dir)
	if code := Main(context.Background(), []string{"wireguard", "peer", "add", "phone", "--endpoint", "192.168.1.10"}, io.Discard, io.Discard); code != 0 {
		t.Fatal("peer add failed")
	}
	stderr := serveWith(t, "--ui", "127.0.0.1:0", "--wireguard", "127.0.0.1:0", "--wireguard-quic", "pass")
	for _, want := range []string{"WireGuard listening", `"quic": "pass"`, `"peers": 1`, "/setup/wireguard/"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}
	m := consoleURL.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no console URL:\n%s", stderr.String())
	}
	get := func(url string, proxy string) (int, string) {
		tr := &http.Transport{}
		if proxy != "" {
			pu, _ := neturl.Parse(proxy)
			tr.Proxy = http.ProxyURL(pu)
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, html.UnescapeString(string(b))
	}
	code, page := get(m[1]+"setup/wireguard/", "")
	if code != 200 || !strings.Contains(page, "<h2>phone</h2>") || !strings.Contains(page, "PrivateKey = ") || !strings.Contains(page, "Endpoint = ") {
		t.Errorf("console /setup/wireguard/: %d\n%.600s", code, page)
	}
	// Listening on port 0, the configs carry the port the server bound.
	udp := regexp.MustCompile(`"udp": "([^"]+)"`).FindStringSubmatch(stderr.String())
	if udp == nil || strings.HasSuffix(udp[1], ":0") || !strings.Contains(page, "Endpoint = "+udp[1]+"\n") {
		t.Errorf("console configs' endpoint is not the bound address %v:\n%.600s", udp, page)
	}
	proxyAddr := regexp.MustCompile(`\blistening\s+\{"addr": "([^"]+)"`).FindStringSubmatch(stderr.String())
	if proxyAddr == nil {
		t.Fatalf("no proxy address:\n%s", stderr.String())
	}
	if _, page := get("http://inspectproxy.setup/wireguard/", "http://"+proxyAddr[1]); strings.Contains(page, "PrivateKey") {
		t.Error("the proxy's own setup page shows a device's private key")
	}
	if fi, err := os.Stat(filepath.Join(dir, "wireguard", "server.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("server key: %v %v", fi, err)
	}
}

// TestWireGuardEndpointFromListen: a server bound to one address is
// reached there, a loopback one only from this machine.
func TestWireGuardEndpointFromListen(t *testing.T) {
	for _, tc := range []struct{ listen, endpoint, want string }{
		{listen: "192.0.2.7:51999", want: "192.0.2.7:51999"},
		{listen: "192.0.2.7:51999", endpoint: "vpn.example.net", want: "vpn.example.net:51999"},
		{listen: "127.0.0.1:51820", want: "127.0.0.1:51820"},
	} {
		s := wgSetup{cfg: config.WireGuard{Listen: tc.listen, Endpoint: tc.endpoint}}
		if got, err := s.endpoint(); err != nil || got != tc.want {
			t.Errorf("listen %q endpoint %q: %q, %v; want %q", tc.listen, tc.endpoint, got, err, tc.want)
		}
	}
}
