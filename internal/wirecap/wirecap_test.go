package wirecap

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/testtool"
)

// TestTimestamps checks the capture's clock against the sender's: each
// segment's kernel timestamp lies between the time.Now() before and after
// the write (or CloseWrite) that sent it, and before the reader's wake-up.
func TestTimestamps(t *testing.T) {
	ln, srvAddr, c := listenCaptured(t)
	type span struct{ before, after, read time.Time }
	const n = 50
	spans := make([]span, n+1)
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- s.(*net.TCPConn)
	}()
	cl, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(srvAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()
	buf := make([]byte, 1)
	for i := range n {
		spans[i].before = time.Now()
		if _, err := cl.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		spans[i].after = time.Now()
		if _, err := s.Read(buf); err != nil {
			t.Fatal(err)
		}
		spans[i].read = time.Now()
		time.Sleep(time.Millisecond)
	}
	spans[n].before = time.Now()
	_ = cl.CloseWrite()
	spans[n].after = time.Now()
	if _, err := s.Read(buf); err == nil {
		t.Fatal("read after FIN succeeded")
	}
	spans[n].read = time.Now()
	tr, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	conns := tr.ConnTo(srvAddr)
	if len(conns) != 1 {
		t.Fatalf("%d connections to %s captured, want 1", len(conns), srvAddr)
	}
	cs := conns[0].Client
	if len(cs.Segments) != n || cs.Bytes() != n || cs.FIN.IsZero() {
		t.Fatalf("captured %d segments, %d bytes, FIN %v; want %d, %d and a FIN", len(cs.Segments), cs.Bytes(), cs.FIN, n, n)
	}
	var worst time.Duration
	for i, sp := range spans {
		at := cs.FIN
		if i < n {
			at = cs.Segments[i].At
		}
		if at.Before(sp.before) || at.After(sp.after) || at.After(sp.read) {
			t.Errorf("segment %d at %s, outside its write [%s, %s] or after its read %s",
				i, at.Format(time.StampMicro), sp.before.Format(time.StampMicro), sp.after.Format(time.StampMicro), sp.read.Format(time.StampMicro))
		}
		worst = max(worst, sp.read.Sub(at))
	}
	t.Logf("largest capture-to-read delay: %v", worst)
}

// TestAgainstTshark writes a capture as pcapng and has tshark read it: the
// packets, their flags, sequence numbers, lengths and times must be the
// ones the timelines were built from.
func TestAgainstTshark(t *testing.T) {
	tshark := testtool.Need(t, "tshark")
	ln, srvAddr, c := listenCaptured(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(s, s) // echo until the client's FIN, then close
		s.Close()
	}()
	cl, err := net.Dial("tcp", srvAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 100, 70000} {
		if _, err := cl.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(cl, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	_ = cl.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, cl)
	cl.Close()
	<-done
	tr, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "c.pcapng")
	if err := tr.WritePcapng(path); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tshark, "-r", path, "-Y", "tcp", "-T", "fields", "-E", "separator=,",
		"-e", "frame.time_epoch", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.flags", "-e", "tcp.seq_raw", "-e", "tcp.len").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(tr.Packets) {
		t.Fatalf("tshark reads %d TCP packets, the capture has %d", len(lines), len(tr.Packets))
	}
	for i, line := range lines {
		p := tr.Packets[i]
		var flags uint8
		for _, f := range []struct {
			set bool
			bit uint8
		}{{p.FIN, 0x01}, {p.SYN, 0x02}, {p.RST, 0x04}, {p.ACK, 0x10}} {
			if f.set {
				flags |= f.bit
			}
		}
		var sec, nsec int64
		var sport, dport, seq, length uint64
		var tflags uint64
		if _, err := fmt.Sscanf(line, "%d.%d,%d,%d,0x%x,%d,%d", &sec, &nsec, &sport, &dport, &tflags, &seq, &length); err != nil {
			t.Fatalf("tshark line %q: %v", line, err)
		}
		at := time.Unix(sec, nsec)
		if d := at.Sub(p.At); d < -time.Microsecond || d > time.Microsecond ||
			uint16(sport) != p.Src.Port() || uint16(dport) != p.Dst.Port() ||
			uint8(tflags)&0x17 != flags || uint32(seq) != p.Seq || int(length) != len(p.Payload) {
			t.Errorf("packet %d: tshark %q, capture %+v (payload %d)", i, line, p, len(p.Payload))
		}
	}
	conn := tr.ConnTo(srvAddr)[0]
	if conn.Client.Bytes() != 70101 || conn.Server.Bytes() != 70101 || conn.Client.FIN.IsZero() || conn.Server.FIN.IsZero() {
		t.Errorf("timeline: client sent %d (FIN %v), server %d (FIN %v); want 70101 each and both FINs",
			conn.Client.Bytes(), conn.Client.FIN, conn.Server.Bytes(), conn.Server.FIN)
	}
}

// listenCaptured listens on loopback and captures the listener's port.
func listenCaptured(t *testing.T) (net.Listener, netip.AddrPort, *Capture) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := netip.MustParseAddrPort(ln.Addr().String())
	c, err := Start(Config{Ports: []uint16{addr.Port()}})
	if err != nil {
		t.Fatal(err)
	}
	return ln, addr, c
}
