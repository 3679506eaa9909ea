package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
// proxy, as a user does.
func TestServeWireGuard(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("INSPECTPROXY_MITM_DATA_DIR", dir)
	stderr := serveWith(t, "--ui", "", "--wireguard", "127.0.0.1:0", "--wireguard-quic", "pass")
	for _, want := range []string{"WireGuard listening", `"quic": "pass"`, "inspectproxy wireguard peer add phone"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "wireguard", "server.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("server key: %v %v", fi, err)
	}
}
