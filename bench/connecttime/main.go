// Command connecttime measures how far each way of timing a TCP connect
// from Go lies above the SYN to SYN/ACK time on the wire, as dumpcap sees
// it on an interface (loopback by default), to choose how tcp.connect_ms
// is measured (issue 9). Run as root, with tshark installed:
//
//	go run ./bench/connecttime -n 300
//
// Methods, all on the same connects:
//
//	dial     time.Now() around net.Dialer.DialContext (what connect_ms was)
//	control  from net.Dialer.Control (socket made, connect(2) next) to DialContext's return
//	tcp_info the kernel's tcpi_rtt right after connect (timing.HandshakeRTT, what connect_ms is)
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/capture"
	"github.com/inspectproxy/inspectproxy/timing"
)

func main() {
	n := flag.Int("n", 300, "connects")
	addr := flag.String("listen", "127.0.0.1:0", "where the test server listens")
	iface := flag.String("i", "lo", "interface to capture on")
	flag.Parse()
	if err := run(*n, *addr, *iface); err != nil {
		fmt.Fprintln(os.Stderr, "connecttime:", err)
		os.Exit(1)
	}
}

type sample struct {
	local                  netip.AddrPort
	dial, control, tcpInfo time.Duration
	kernel                 bool
}

func run(n int, addr, iface string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = c.Read(make([]byte, 1)); c.Close() }()
		}
	}()
	dir, err := os.MkdirTemp("", "connecttime")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port := ln.Addr().(*net.TCPAddr).Port
	capt, err := capture.Start(context.Background(), iface, fmt.Sprintf("tcp port %d and tcp[tcpflags] & tcp-syn != 0", port), dir)
	if err != nil {
		return err
	}
	var samples []sample
	for range n {
		var t0, tc time.Time
		d := net.Dialer{Control: func(string, string, syscall.RawConn) error { tc = time.Now(); return nil }}
		t0 = time.Now()
		c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
		t1 := time.Now()
		if err != nil {
			_ = capt.Stop()
			return err
		}
		tcp := c.(*net.TCPConn)
		rtt, ok := timing.HandshakeRTT(tcp)
		samples = append(samples, sample{local: tcp.LocalAddr().(*net.TCPAddr).AddrPort(), dial: t1.Sub(t0), control: t1.Sub(tc), tcpInfo: rtt, kernel: ok})
		c.Close() // the client closes first, so its port is not reused during the run
		time.Sleep(2 * time.Millisecond)
	}
	if err := capt.Stop(); err != nil {
		return err
	}
	ps, err := capt.Packets()
	if err != nil {
		return err
	}
	wire := capture.Handshakes(ps)
	var w, dial, control, info []time.Duration
	fallbacks := 0
	for _, s := range samples {
		h, ok := wire[s.local]
		if !ok {
			continue
		}
		if !s.kernel {
			fallbacks++
			continue
		}
		w = append(w, h)
		dial = append(dial, s.dial-h)
		control = append(control, s.control-h)
		info = append(info, s.tcpInfo-h)
	}
	fmt.Printf("%d connects to %s on %s, %d matched in the capture, %d without a kernel sample\n\n", n, ln.Addr(), iface, len(w), fallbacks)
	fmt.Println("| method | median excess µs | p95 excess µs | min µs | max µs |")
	fmt.Println("|---|---:|---:|---:|---:|")
	row := func(name string, ds []time.Duration) {
		slices.Sort(ds)
		fmt.Printf("| %s | %.1f | %.1f | %.1f | %.1f |\n", name, us(pct(ds, 50)), us(pct(ds, 95)), us(ds[0]), us(ds[len(ds)-1]))
	}
	row("wire SYN→SYN/ACK itself (not an excess)", w)
	row("dial", dial)
	row("control", control)
	row("tcp_info", info)
	return nil
}

func pct(ds []time.Duration, p int) time.Duration { return ds[(len(ds)-1)*p/100] }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
