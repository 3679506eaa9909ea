// Package capture records packets with Wireshark's dumpcap and reads them
// back with tshark, so that tests and benchmarks can hold the proxy's own
// timings against what was on the wire. It needs root (or capture
// capabilities) and the tshark package.
package capture

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Capture is a running dumpcap.
type Capture struct {
	cmd  *exec.Cmd
	file string
	done chan error
	err  bytes.Buffer
}

// Start captures on iface the packets matching the BPF filter into a file
// in dir, and returns once dumpcap says it is capturing.
func Start(ctx context.Context, iface, filter, dir string) (*Capture, error) {
	c := &Capture{file: filepath.Join(dir, "capture.pcapng"), done: make(chan error, 1)}
	c.cmd = exec.CommandContext(ctx, "dumpcap", "-q", "-i", iface, "-f", filter, "-w", c.file)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c.cmd.Stderr = pw
	if err := c.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("capture: dumpcap: %w", err)
	}
	pw.Close()
	started := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		said := false
		for sc.Scan() {
			c.err.WriteString(sc.Text() + "\n")
			if !said && strings.HasPrefix(sc.Text(), "Capturing on") {
				said = true
				started <- true
			}
		}
		if !said {
			started <- false
		}
		c.done <- c.cmd.Wait()
	}()
	select {
	case ok := <-started:
		if !ok {
			return nil, fmt.Errorf("capture: dumpcap did not start: %w: %s", <-c.done, c.err.String())
		}
		// dumpcap says so a little before its filter is in place.
		time.Sleep(settle)
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		return nil, errors.New("capture: dumpcap did not start within 30s")
	}
	return c, nil
}

// settle is how long after "Capturing on" packets are seen for sure.
const settle = 500 * time.Millisecond

// flushWait is how long Stop lets dumpcap read what the kernel holds:
// libpcap hands packets over in blocks retired every 250 ms, and a block
// still open at SIGTERM is lost.
const flushWait = time.Second

// Stop ends the capture, after flushWait so that the last packets are in.
func (c *Capture) Stop() error {
	time.Sleep(flushWait)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-c.done; err != nil {
		return fmt.Errorf("capture: dumpcap: %w: %s", err, c.err.String())
	}
	return nil
}

// Packet is one captured TCP segment.
type Packet struct {
	Time     time.Time
	Src, Dst netip.AddrPort
	// Flags are the TCP flags (SYN 0x02, ACK 0x10, FIN 0x01, RST 0x04).
	Flags uint16
}

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	ACK = 0x10
)

// Packets reads the TCP segments of a stopped capture with tshark.
func (c *Capture) Packets() ([]Packet, error) {
	out, err := exec.Command("tshark", "-r", c.file, "-T", "fields", "-E", "separator=,",
		"-e", "frame.time_epoch", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
		"-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "tcp.flags").Output()
	if err != nil {
		return nil, fmt.Errorf("capture: tshark: %w", err)
	}
	var ps []Packet
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ",")
		if len(f) != 8 {
			continue
		}
		p, err := parse(f)
		if err != nil {
			return nil, fmt.Errorf("capture: tshark line %q: %w", line, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func parse(f []string) (Packet, error) {
	sec, frac, _ := strings.Cut(f[0], ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return Packet{}, err
	}
	ns, err := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
	if err != nil {
		return Packet{}, err
	}
	ap := func(v4, v6, port string) (netip.AddrPort, error) {
		a, err := netip.ParseAddr(v4 + v6)
		if err != nil {
			return netip.AddrPort{}, err
		}
		p, err := strconv.ParseUint(port, 10, 16)
		return netip.AddrPortFrom(a, uint16(p)), err
	}
	src, err := ap(f[1], f[2], f[3])
	if err != nil {
		return Packet{}, err
	}
	dst, err := ap(f[4], f[5], f[6])
	if err != nil {
		return Packet{}, err
	}
	flags, err := strconv.ParseUint(strings.TrimPrefix(f[7], "0x"), 16, 16)
	return Packet{Time: time.Unix(s, ns), Src: src, Dst: dst, Flags: uint16(flags)}, err
}

// Handshakes returns, per client address (the SYN's source), the time
// from its first SYN to the SYN/ACK answering it: the three-way handshake
// as the wire saw it (a retransmitted SYN counts from the first). A port
// used again later gives its last handshake.
func Handshakes(ps []Packet) map[netip.AddrPort]time.Duration {
	syn := map[netip.AddrPort]time.Time{} // SYNs not answered yet
	out := map[netip.AddrPort]time.Duration{}
	for _, p := range ps {
		switch p.Flags & (SYN | ACK) {
		case SYN:
			if _, ok := syn[p.Src]; !ok {
				syn[p.Src] = p.Time
			}
		case SYN | ACK:
			if t, ok := syn[p.Dst]; ok {
				out[p.Dst] = p.Time.Sub(t)
				delete(syn, p.Dst)
			}
		}
	}
	return out
}
