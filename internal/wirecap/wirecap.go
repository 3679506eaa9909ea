// Package wirecap captures the TCP connections of a test on a network
// interface, with the kernel's timestamps, and turns them into per
// connection timelines (SYN, SYN/ACK, data, FIN, RST per direction).
//
// It exists because inspectproxy's claim is that every event tells the true
// TCP and TLS story of a connection, as a packet capture would: tests hold
// each event against the capture, never against the proxy's own logic. The
// capture is an AF_PACKET socket with a TPACKET_V3 ring (gopacket's
// afpacket: no libpcap, no cgo; the ring keeps up with a bulk transfer on
// loopback, where a plain packet socket's receive buffer drops) in the
// test's own process, filtered in the kernel to the ports the test uses,
// because several test runs share the loopback interface. The timestamps
// come from the kernel on the same clock as the event's start, so a wire
// time maps to an event time as ev.Start + *_ms. A capture that dropped a
// packet is an error, never a silent gap. Capturing needs CAP_NET_RAW
// (root, as CI runs).
package wirecap

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/afpacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/net/bpf"
)

// Packet is one captured TCP segment.
type Packet struct {
	At       time.Time
	Src, Dst netip.AddrPort
	SYN      bool
	ACK      bool
	FIN      bool
	RST      bool
	Seq      uint32
	Payload  []byte
}

// Capture is a running capture; Stop ends it.
type Capture struct {
	h      *afpacket.TPacket
	marker *net.UDPConn // Stop sends a datagram through the interface: the end of the capture
	via    netip.AddrPort
	token  []byte

	mu    sync.Mutex
	raw   [][]byte // frames as captured, for WritePcapng
	rawCI []gopacket.CaptureInfo
	last  time.Time // when the last packet was read
	since time.Time
	done  chan error
	// abandon tells read to give up waiting for the marker; read alone
	// closes the ring, which must not be unmapped under a read.
	abandon atomic.Bool
}

// Config says what to capture.
type Config struct {
	// Iface is the interface; "" is loopback.
	Iface string
	// Ports are the TCP ports whose segments (either direction) are kept.
	Ports []uint16
	// Via is an address routed through Iface, where the end-of-capture
	// marker is sent; unset means 127.0.0.1 (loopback).
	Via netip.Addr
}

// Start captures the IPv4 TCP segments to or from cfg.Ports on cfg.Iface.
func Start(cfg Config) (*Capture, error) {
	if len(cfg.Ports) == 0 {
		return nil, errors.New("wirecap: no ports to capture")
	}
	if cfg.Iface == "" {
		cfg.Iface = "lo"
	}
	if !cfg.Via.IsValid() {
		cfg.Via = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	h, err := afpacket.NewTPacket(afpacket.OptInterface(cfg.Iface), afpacket.OptTPacketVersion(afpacket.TPacketVersion3),
		afpacket.OptFrameSize(1<<16), afpacket.OptBlockSize(1<<20), afpacket.OptNumBlocks(64),
		afpacket.OptBlockTimeout(2*time.Millisecond), afpacket.OptPollTimeout(20*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("wirecap: capture on %s (needs CAP_NET_RAW): %w", cfg.Iface, err)
	}
	marker, err := net.ListenUDP("udp4", nil)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("wirecap: marker socket: %w", err)
	}
	markerPort := uint16(marker.LocalAddr().(*net.UDPAddr).Port)
	// Loopback shows each packet going out and coming in: keep one copy,
	// the incoming one, as libpcap does. Elsewhere (a veth) the two
	// directions are one copy each.
	prog, err := filter(cfg.Ports, markerPort, cfg.Iface != "lo")
	if err == nil {
		err = h.SetBPF(prog)
	}
	if err != nil {
		h.Close()
		marker.Close()
		return nil, fmt.Errorf("wirecap: filter: %w", err)
	}
	c := &Capture{
		h: h, marker: marker, via: netip.AddrPortFrom(cfg.Via, markerPort),
		token: fmt.Appendf(nil, "wirecap end %d %d", os.Getpid(), time.Now().UnixNano()),
		done:  make(chan error, 1),
	}
	if err := c.syncClock(); err != nil {
		h.Close()
		marker.Close()
		return nil, err
	}
	go c.read()
	return c, nil
}

// syncClock waits until the kernel stamps packets as they arrive. Asking
// for timestamps (SO_TIMESTAMPNS) turns receive timestamping on for the
// whole host, but the switch is deferred to a kernel work item; until then
// a packet is stamped only when the capture reads it, late. A datagram
// sent through the filter tells: its stamp must not be later than the
// return of the send. Its stamp also starts the capture: packets the
// socket queued before (between its bind and the filter) are dropped.
func (c *Capture) syncClock() error {
	probe := []byte("wirecap clock sync")
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if _, err := c.marker.WriteToUDPAddrPort(probe, c.via); err != nil {
			return fmt.Errorf("wirecap: clock sync: %w", err)
		}
		sent := time.Now()
		for {
			data, ci, err := c.h.ReadPacketData()
			if errors.Is(err, afpacket.ErrTimeout) {
				break
			}
			if err != nil {
				return fmt.Errorf("wirecap: clock sync: %w", err)
			}
			if bytes.HasSuffix(data, probe) {
				if !ci.Timestamp.After(sent) {
					c.since = ci.Timestamp
					return nil
				}
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("wirecap: the kernel does not stamp packets on arrival (no receive timestamps within 2s)")
}

// filter is a classic BPF program: IPv4 TCP to or from ports, or UDP to
// the marker port, outgoing packets only if keepOutgoing.
func filter(ports []uint16, markerPort uint16, keepOutgoing bool) ([]bpf.RawInstruction, error) {
	const (
		packetOutgoing = 4
		etherTypeIPv4  = 0x0800
	)
	var prog []bpf.Instruction
	if !keepOutgoing {
		prog = append(prog,
			bpf.LoadExtension{Num: bpf.ExtType},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: packetOutgoing, SkipTrue: 0xff}, // patched: drop
		)
	}
	prog = append(prog,
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeIPv4, SkipTrue: 0xff},
		bpf.LoadAbsolute{Off: 20, Size: 2}, // fragment offset: only first fragments carry ports
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 0xff},
		bpf.LoadMemShift{Off: 14}, // X = IP header length
		bpf.LoadAbsolute{Off: 23, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipTrue: 0xfe}, // patched: UDP check
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 6, SkipTrue: 0xff},
	)
	for _, off := range []uint32{14, 16} { // source, then destination port
		prog = append(prog, bpf.LoadIndirect{Off: off, Size: 2})
		for _, p := range ports {
			prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(p), SkipTrue: 0xfd}) // patched: accept
		}
	}
	prog = append(prog, bpf.Jump{Skip: 0xff}) // TCP on other ports: drop
	udp := len(prog)
	prog = append(prog,
		bpf.LoadIndirect{Off: 16, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(markerPort), SkipTrue: 0xfd},
	)
	drop := len(prog)
	prog = append(prog, bpf.RetConstant{Val: 0})
	accept := len(prog)
	prog = append(prog, bpf.RetConstant{Val: 1 << 18})
	// Resolve the placeholder targets into relative skips.
	for i, ins := range prog {
		target := -1
		switch j := ins.(type) {
		case bpf.JumpIf:
			switch j.SkipTrue {
			case 0xff:
				target = drop
			case 0xfe:
				target = udp
			case 0xfd:
				target = accept
			}
			if target >= 0 {
				j.SkipTrue = uint8(target - i - 1)
				prog[i] = j
			}
		case bpf.Jump:
			j.Skip = uint32(drop - i - 1)
			prog[i] = j
		}
	}
	if len(prog) > 250 {
		return nil, fmt.Errorf("%d ports is too many for one filter", len(ports))
	}
	return bpf.Assemble(prog)
}

func (c *Capture) read() {
	defer c.h.Close()
	for {
		data, ci, err := c.h.ReadPacketData()
		if errors.Is(err, afpacket.ErrTimeout) {
			if c.abandon.Load() {
				c.done <- errors.New("abandoned")
				return
			}
			continue
		}
		if err != nil {
			c.done <- err
			return
		}
		if c.isMarker(data) {
			_, st, err := c.h.SocketStats()
			if err == nil && st.Drops() > 0 {
				err = fmt.Errorf("the kernel dropped %d packets", st.Drops())
			}
			c.done <- err
			return
		}
		if ci.Timestamp.Before(c.since) {
			continue
		}
		// Only kept here: decoding waits for Stop, so that the capture
		// takes as little CPU as it can from the proxy it watches, which
		// may run in the same process.
		c.mu.Lock()
		c.last = time.Now()
		c.raw = append(c.raw, data)
		c.rawCI = append(c.rawCI, ci)
		c.mu.Unlock()
	}
}

// drain waits until the main handle has been quiet for a while.
func (c *Capture) drain() {
	const quiet = 20 * time.Millisecond
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		c.mu.Lock()
		last := c.last
		c.mu.Unlock()
		if time.Since(last) >= quiet {
			return
		}
		time.Sleep(quiet / 4)
	}
}

func (c *Capture) isMarker(frame []byte) bool { return bytes.HasSuffix(frame, c.token) }

// decode reads an Ethernet frame (loopback's is all zeros) holding IPv4 TCP.
func decode(frame []byte, at time.Time) (Packet, bool) {
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		return Packet{}, false
	}
	src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
	dst, _ := netip.AddrFromSlice(ip.DstIP.To4())
	return Packet{
		At:      at,
		Src:     netip.AddrPortFrom(src, uint16(tcp.SrcPort)),
		Dst:     netip.AddrPortFrom(dst, uint16(tcp.DstPort)),
		SYN:     tcp.SYN,
		ACK:     tcp.ACK,
		FIN:     tcp.FIN,
		RST:     tcp.RST,
		Seq:     tcp.Seq,
		Payload: slices.Clone(tcp.Payload),
	}, true
}

// Stop ends the capture once every packet sent before the call has been
// read, and returns what was captured.
func (c *Capture) Stop() (*Trace, error) {
	// Let the connections' last exchanges (the final ACK of a close) land.
	c.drain()
	_, err := c.marker.WriteToUDPAddrPort(c.token, c.via)
	c.marker.Close()
	ended := false
	if err == nil {
		select {
		case err = <-c.done:
			ended = true
		case <-time.After(5 * time.Second):
			err = errors.New("the end marker was not captured within 5s")
		}
	}
	if !ended {
		c.abandon.Store(true)
		<-c.done
	}
	if err != nil {
		return nil, fmt.Errorf("wirecap: stop: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var packets []Packet
	for i, data := range c.raw {
		if p, ok := decode(data, c.rawCI[i].Timestamp); ok {
			packets = append(packets, p)
		}
	}
	return newTrace(packets, c.raw, c.rawCI), nil
}

// Trace is a finished capture.
type Trace struct {
	Packets []Packet
	Conns   []*Conn
	raw     [][]byte
	rawCI   []gopacket.CaptureInfo
}

func newTrace(packets []Packet, raw [][]byte, ci []gopacket.CaptureInfo) *Trace {
	t := &Trace{Packets: packets, raw: raw, rawCI: ci}
	open := map[[2]netip.AddrPort]*Conn{}
	for _, p := range packets {
		key := [2]netip.AddrPort{p.Src, p.Dst}
		c := open[key]
		if c == nil {
			c = open[[2]netip.AddrPort{p.Dst, p.Src}]
		}
		// A SYN with a new sequence number is a new connection on the
		// same ports; the same one is a retransmission.
		if p.SYN && !p.ACK && (c == nil || c.Client.isn != p.Seq) {
			c = &Conn{Client: &Side{Addr: p.Src}, Server: &Side{Addr: p.Dst}, SYN: p.At}
			t.Conns = append(t.Conns, c)
			open[key] = c
		}
		if c == nil {
			continue // a connection that began before the capture
		}
		c.add(p)
	}
	return t
}

// WritePcapng writes the capture as pcapng (Wireshark, tshark).
func (t *Trace) WritePcapng(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w, err := pcapgo.NewNgWriter(f, layers.LinkTypeEthernet)
	if err == nil {
		for i, b := range t.raw {
			ci := t.rawCI[i]
			ci.InterfaceIndex = 0
			if err = w.WritePacket(ci, b); err != nil {
				break
			}
		}
		if err == nil {
			err = w.Flush()
		}
	}
	return errors.Join(err, f.Close())
}

// ConnTo returns the connections to server, in SYN order.
func (t *Trace) ConnTo(server netip.AddrPort) []*Conn {
	var out []*Conn
	for _, c := range t.Conns {
		if c.Server.Addr == server {
			out = append(out, c)
		}
	}
	return out
}

// ConnFrom returns the connection opened by client, if captured.
func (t *Trace) ConnFrom(client netip.AddrPort) *Conn {
	for _, c := range t.Conns {
		if c.Client.Addr == client {
			return c
		}
	}
	return nil
}

// Conn is one TCP connection: its Client sent the SYN.
type Conn struct {
	Client, Server *Side
	// SYN is when the client's SYN was seen, SYNACK the server's answer
	// (zero if none).
	SYN, SYNACK time.Time
}

// Side is what one end of a connection sent.
type Side struct {
	Addr netip.AddrPort
	// FIN and RST are this side's first FIN and RST (zero if none).
	FIN, RST time.Time
	// Segments are the data-carrying segments, in capture order, each at
	// its offset in this side's byte stream (retransmissions included).
	Segments []Segment
	// Stream is the payload in sequence order: what this side sent.
	Stream []byte

	isn    uint32
	hasISN bool
}

// Segment is one data segment.
type Segment struct {
	At     time.Time
	Offset int64
	Len    int
}

// Bytes is the payload this side sent (sequence space, retransmissions
// counted once).
func (s *Side) Bytes() int64 { return int64(len(s.Stream)) }

// At returns when the byte at offset off of this side's stream was first
// sent; ok is false if it never was.
func (s *Side) At(off int64) (time.Time, bool) {
	for _, g := range s.Segments {
		if off >= g.Offset && off < g.Offset+int64(g.Len) {
			return g.At, true
		}
	}
	return time.Time{}, false
}

// FirstDataAfter returns when this side first sent a byte at or past off.
func (s *Side) FirstDataAfter(off int64) (time.Time, bool) {
	for _, g := range s.Segments {
		if g.Offset+int64(g.Len) > off {
			return g.At, true
		}
	}
	return time.Time{}, false
}

// DataBetween reports whether this side sent data after from and before to.
func (s *Side) DataBetween(from, to time.Time) bool {
	for _, g := range s.Segments {
		if g.At.After(from) && g.At.Before(to) {
			return true
		}
	}
	return false
}

func (c *Conn) add(p Packet) {
	s := c.Client
	if p.Src == c.Server.Addr {
		s = c.Server
	}
	if p.SYN {
		if p.ACK && c.SYNACK.IsZero() {
			c.SYNACK = p.At
		}
		if !s.hasISN {
			s.isn, s.hasISN = p.Seq, true
		}
		return
	}
	if p.RST && s.RST.IsZero() {
		s.RST = p.At
	}
	if len(p.Payload) > 0 && s.hasISN {
		off := int64(p.Seq - s.isn - 1)
		s.Segments = append(s.Segments, Segment{At: p.At, Offset: off, Len: len(p.Payload)})
		if end := off + int64(len(p.Payload)); end > int64(len(s.Stream)) {
			s.Stream = append(s.Stream, make([]byte, end-int64(len(s.Stream)))...)
		}
		copy(s.Stream[off:], p.Payload)
	}
	if p.FIN && s.FIN.IsZero() {
		s.FIN = p.At
	}
}

// Side returns the side of c at addr (nil if neither).
func (c *Conn) Side(addr netip.AddrPort) *Side {
	switch addr {
	case c.Client.Addr:
		return c.Client
	case c.Server.Addr:
		return c.Server
	}
	return nil
}
