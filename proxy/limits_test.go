package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/internal/splice"
)

func TestMaxConnections(t *testing.T) {
	h := startProxy(t, func(c *config.Config) { c.Limits.MaxConnections = 1 })
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	first := h.connect(addr)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "max_connections") {
		t.Errorf("over the cap: %d %q", resp.StatusCode, body)
	}
	if ev := h.event(); !strings.Contains(ev.Error, "max_connections") {
		t.Errorf("refused connection's event: %+v", ev)
	}
	first.Close()
	h.event()
	// The slot is back: a new tunnel works.
	again := h.connect(addr)
	echo(t, again, []byte("ok"))
	again.Close()
	h.event()
}

func TestTunnelTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*config.Config)
		server  func(*net.TCPConn)
		client  func(t *testing.T, c *net.TCPConn)
		timeout string
		absent  string
	}{
		{
			name:   "hello timeout keeps the tunnel",
			edit:   func(c *config.Config) { c.Limits.HelloTimeout = 100 * time.Millisecond },
			server: func(c *net.TCPConn) { _, _ = io.Copy(c, c) },
			client: func(t *testing.T, c *net.TCPConn) {
				time.Sleep(250 * time.Millisecond)
				echo(t, c, []byte("late but fine"))
			},
			absent: "hello_timeout",
		},
		{
			name:   "idle",
			edit:   func(c *config.Config) { c.Limits.IdleTimeout = 200 * time.Millisecond },
			server: func(c *net.TCPConn) { _, _ = io.Copy(c, c) },
			client: func(t *testing.T, c *net.TCPConn) {
				echo(t, c, []byte("x"))
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Error("idle tunnel was not closed")
				}
			},
			timeout: "idle",
		},
		{
			name:   "half close",
			edit:   func(c *config.Config) { c.Limits.HalfCloseTimeout = 200 * time.Millisecond },
			server: silentAfterFIN, // never answers the FIN
			client: func(t *testing.T, c *net.TCPConn) {
				_ = c.CloseWrite()
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
					t.Errorf("half-closed tunnel not cut: %v", err)
				}
			},
			timeout: "half_close",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startProxy(t, tc.edit)
			c := h.connect(tcpServer(t, tc.server))
			tc.client(t, c)
			c.Close()
			ev := h.event()
			if ev.TCP.Timeout != tc.timeout {
				t.Errorf("timeout = %q, want %q", ev.TCP.Timeout, tc.timeout)
			}
			if tc.absent != "" && !strings.Contains(ev.TLSAbsent, tc.absent) {
				t.Errorf("tls_absent = %q, want it to name %s", ev.TLSAbsent, tc.absent)
			}
		})
	}
}

// TestInspectBufferCap sends a handshake message larger than the
// inspection buffer: inspection stops with a reason, the bytes still flow.
func TestInspectBufferCap(t *testing.T) {
	h := startProxy(t, func(c *config.Config) { c.Limits.InspectBuffer = 4096 })
	addr := tcpServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	var msg bytes.Buffer
	body := make([]byte, 20000)
	hs := append([]byte{1, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	for len(hs) > 0 { // split into records of 16 KiB
		n := min(len(hs), 16384)
		msg.Write([]byte{0x16, 3, 1})
		_ = binary.Write(&msg, binary.BigEndian, uint16(n))
		msg.Write(hs[:n])
		hs = hs[n:]
	}
	c := h.connect(addr)
	go func() { _, _ = c.Write(msg.Bytes()); _ = c.CloseWrite() }()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg.Bytes()) {
		t.Fatalf("echo changed: %d of %d bytes, %v", len(got), msg.Len(), err)
	}
	c.Close()
	ev := h.event()
	if ev.TLS != nil || !strings.Contains(ev.TLSAbsent, "4096") {
		t.Errorf("tls=%v tls_absent=%q: want the cap named", ev.TLS, ev.TLSAbsent)
	}
}

// silentAfterFIN reads the client's FIN but never closes its side, until
// the proxy resets it (or 2 s pass).
func silentAfterFIN(c *net.TCPConn) {
	end := time.Now().Add(2 * time.Second)
	buf := make([]byte, 512)
	for time.Now().Before(end) {
		_, err := c.Read(buf)
		switch {
		case err == io.EOF:
			time.Sleep(10 * time.Millisecond)
		case err != nil:
			return
		}
	}
}

func TestConnectionCapFitsFileLimit(t *testing.T) {
	limit, ok := openFileLimit()
	if !ok {
		t.Skip("no file limit on this platform")
	}
	log := zaptest.NewLogger(t)
	pipes := &splice.Pool{}
	if got := connectionCap(10, pipes, log); got != 10 {
		t.Errorf("a small cap is kept: %d", got)
	}
	huge := int(limit) // more connections than descriptors
	if got := connectionCap(huge, pipes, log); got >= huge || got*fdsPerConn+pipes.MaxFDs() > int(limit) {
		t.Errorf("cap %d for a limit of %d descriptors", got, limit)
	}
	// Issue 13: on this project's machines (a hard limit of 20,000) the
	// cap no longer falls below 9,000 tunnels.
	if limit >= 20000 && connectionCap(9000, pipes, log) != 9000 {
		t.Errorf("the cap of 9,000 is lowered with %d descriptors", limit)
	}
}
