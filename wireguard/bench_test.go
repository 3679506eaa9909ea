package wireguard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// The benchmarks compare one client's TCP through the WireGuard mode with
// the same client through the HTTP proxy mode (CONNECT, passthrough),
// both on this machine: bench/wireguard.sh runs them and records the
// ratio. The WireGuard client's own cost (wireguard-go and its userspace
// stack, which on a phone is the phone's) is in the numbers.

// downloadBytes is what one download moves.
const downloadBytes = 256 << 20

// benchUpstream serves, for each connection, the number of bytes the
// client's first line asks for, then closes.
func benchUpstream(b testing.TB) string {
	ln := listen(b, 1, 0)
	zeros := make([]byte, 256<<10)
	serve(ln, func(c net.Conn) {
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		n, _ := strconv.Atoi(line[:len(line)-1])
		for n > 0 {
			w, err := c.Write(zeros[:min(n, len(zeros))])
			if err != nil {
				return
			}
			n -= w
		}
	})
	return ln.Addr().String()
}

type nopSink struct{}

func (nopSink) Write(*event.Event) error { return nil }

// httpProxy starts the HTTP proxy mode and returns a dialer that reaches
// a target through it with CONNECT.
func httpProxy(b *testing.B) func(target string) net.Conn {
	cfg := config.Default()
	cfg.Listen, cfg.Log.Level, cfg.TLS.Probe = "127.0.0.1:0", "warn", false
	srv, err := proxy.New(cfg, proxy.Options{Log: zap.NewNop(), Sink: nopSink{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan net.Addr, 1), make(chan struct{})
	go func() { _ = srv.Run(ctx, func(a net.Addr) { ready <- a }); close(done) }()
	addr := (<-ready).String()
	b.Cleanup(func() { cancel(); <-done })
	return func(target string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 || br.Buffered() != 0 {
			b.Fatalf("CONNECT: %v %v", resp, err)
		}
		return c
	}
}

// tunnelDialer starts the WireGuard mode listening on listen and returns
// a dialer through a device in its tunnel.
func tunnelDialer(b testing.TB, listen string) func(string) net.Conn {
	env := testServer(b, func(o *Options) { o.Listen = listen })
	c := newClient(b, env.config(b, "phone"))

	return func(target string) net.Conn {
		nc, err := c.Dial("tcp", target)
		if err != nil {
			b.Fatal(err)
		}
		return nc
	}
}

// BenchmarkDownload is one TCP download of downloadBytes per op; the
// WireGuard mode on every address (wireguard-go's bind) and on one
// (hostBind).
func BenchmarkDownload(b *testing.B) {
	up := benchUpstream(b)
	for _, mode := range []string{"http-proxy", "wireguard", "wireguard-one-address"} {
		b.Run(mode, func(b *testing.B) {
			dial := dialerFor(b, mode)
			b.SetBytes(downloadBytes)
			buf := make([]byte, 256<<10)
			defer reportCPU(b)()
			for b.Loop() {
				c := dial(up)
				fmt.Fprintf(c, "%d\n", downloadBytes)
				n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, buf)
				_ = c.Close()
				if err != nil || n != downloadBytes {
					b.Fatalf("downloaded %d bytes: %v", n, err)
				}
			}
		})
	}
}

// BenchmarkConnection is one connection per op: connect, ask for 1 KiB,
// read it, close; 16 at a time.
func BenchmarkConnection(b *testing.B) {
	up := benchUpstream(b)
	for _, mode := range []string{"http-proxy", "wireguard"} {
		b.Run(mode, func(b *testing.B) {
			dial := dialerFor(b, mode)
			b.SetParallelism(8) // 16 on 2 cores
			defer reportCPU(b)()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 2048)
				for pb.Next() {
					c := dial(up)
					io.WriteString(c, "1024\n")
					n, err := io.ReadFull(c, buf[:1024])
					_ = c.Close()
					if err != nil || n != 1024 {
						b.Errorf("read %d bytes: %v", n, err)
						return
					}
				}
			})
		})
	}
}

// reportCPU reports the process's CPU time (user and system: client,
// proxy and server together) per op; on a loaded machine it is steadier
// than the wall-clock rate.
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		b.ReportMetric(float64((cpu()-start).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	}
}

func dialerFor(b *testing.B, mode string) func(string) net.Conn {
	switch mode {
	case "wireguard":
		return tunnelDialer(b, ":0")
	case "wireguard-one-address":
		return tunnelDialer(b, "127.0.0.1:0")
	}
	return httpProxy(b)
}
