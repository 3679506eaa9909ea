package timing

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testnet"
)

func listen(t *testing.T) (string, net.Listener) {
	ln := serve(t, "127.0.0.1:0")
	return ln.Addr().String(), ln
}

// serve accepts on addr and holds connections until the test ends.
func serve(t *testing.T, addr string) net.Listener {
	return testnet.Listen(t, addr, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

func TestDial(t *testing.T) {
	addr, _ := listen(t)
	_, port, _ := net.SplitHostPort(addr)
	closed, cln := listen(t)
	cln.Close()
	for _, tc := range []struct {
		name    string
		target  string
		deny    func(netip.AddrPort) error
		wantDNS bool
		wantErr string
	}{
		{name: "ip literal", target: addr},
		{name: "name", target: "localhost:" + port, wantDNS: true},
		{name: "refused", target: closed, wantErr: "refused"},
		{name: "denied", target: addr, deny: func(netip.AddrPort) error { return errors.New("on the list") }, wantErr: "on the list"},
		{name: "bad target", target: "no-port", wantErr: "missing port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dialer{Timeout: 2 * time.Second, Deny: tc.deny}
			res, err := d.Dial(context.Background(), tc.target)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if tc.deny != nil && !errors.Is(err, ErrDenied) {
					t.Errorf("denial is not ErrDenied: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer res.Conn.Close()
			if (res.DNS >= 0) != tc.wantDNS {
				t.Errorf("DNS = %v, want measured=%v", res.DNS, tc.wantDNS)
			}
			if res.Connect < 0 || res.ConnectedAt < res.Connect || !res.Remote.IsValid() {
				t.Errorf("connect=%v at=%v remote=%v", res.Connect, res.ConnectedAt, res.Remote)
			}
		})
	}
}

// TestFINRace: the direction that records its FIN first may hold the later
// time (two goroutines); the first FIN is the earlier one, in history too.
func TestFINRace(t *testing.T) {
	var c Close
	c.Mark("client", HistData)
	c.FIN("server", 12*time.Millisecond)
	c.FIN("client", 11*time.Millisecond)
	if s := c.Snapshot(); s.FirstFIN != "client" || s.History != "DFf" || s.HalfClose != time.Millisecond {
		t.Errorf("snapshot %+v", s)
	}
}

func TestCloseSnapshot(t *testing.T) {
	var c Close
	c.FIN("server", 10*time.Millisecond)
	c.FIN("client", 25*time.Millisecond)
	c.FIN("server", 40*time.Millisecond) // only the first FIN per side counts
	c.RST("client", "abort", 30*time.Millisecond)
	c.RST("server", "data_after_close", 31*time.Millisecond)
	c.Timeout("idle")
	s := c.Snapshot()
	if s.FirstFIN != "server" || s.HalfClose != 15*time.Millisecond || s.RST != "client" || s.RSTCause != "abort" || s.Timeout != "idle" {
		t.Errorf("snapshot %+v", s)
	}
	// Zeek's letters, once each, in order: server FIN, client FIN, client RST.
	if s.History != "fFR" {
		t.Errorf("history %q, want fFR", s.History)
	}
	var open Close
	if s := open.Snapshot(); s.HalfClose != -1 || s.FirstFIN != "" {
		t.Errorf("empty snapshot %+v", s)
	}
}

func TestInfoAndReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := (<-accepted).(*net.TCPConn)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_, _ = srv.Read(make([]byte, 1))
	if info, ok := Info(srv); !ok || info.Closed || info.SinceRecv > time.Second {
		t.Errorf("open socket info %+v ok=%v", info, ok)
	}
	_ = srv.SetLinger(0)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !IsReset(err) {
		t.Errorf("peer of an aborted connection read %v, want a reset", err)
	}
}

func TestMS(t *testing.T) {
	if MS(1500*time.Microsecond) != 1.5 || MSPtr(-1) != nil || *MSPtr(0) != 0 {
		t.Error("MS conversions")
	}
}
