package capture

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/inspectproxy/inspectproxy/internal/testnet"
)

// TestHandshakes captures real connects on loopback: each client port has
// one handshake, from its SYN to the SYN/ACK, which came after it.
func TestHandshakes(t *testing.T) {
	ln := testnet.Listen(t, "127.0.0.1:0", nil)
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := Start(context.Background(), "lo", "tcp port "+strconv.Itoa(port), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var clients []netip.AddrPort
	for range 3 {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, conn.LocalAddr().(*net.TCPAddr).AddrPort())
		conn.Close()
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	ps, err := c.Packets()
	if err != nil {
		t.Fatal(err)
	}
	hs := Handshakes(ps)
	for _, cl := range clients {
		if d, ok := hs[cl]; !ok || d <= 0 {
			t.Errorf("client %v: handshake %v, %v (packets %v)", cl, d, ok, ps)
		}
	}
}
