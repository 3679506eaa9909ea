package wireguard

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const nicID = 1

// netTUN is wireguard-go's tun.Device over a gVisor stack: decrypted
// packets from the peers go into the stack, and what the stack sends goes
// back through the tunnel. wireguard-go's own tun/netstack does the same
// for a client, but hides its stack; a server needs the stack itself, to
// take every destination (promiscuous mode) through forwarders.
type netTUN struct {
	ep     *channel.Endpoint
	stack  *stack.Stack
	mtu    int
	events chan tun.Event
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
}

// newNetTUN builds the stack: IPv4 and IPv6, TCP with SACK and receive
// buffer auto-tuning (a phone's download must not be window-bound), every
// destination accepted and answered from (promiscuous, spoofing).
func newNetTUN(mtu int) (*netTUN, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
		HandleLocal:        false,
	})
	sack := tcpip.TCPSACKEnabled(true)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	// No TIME-WAIT: with no listener behind the forwarder, gVisor drops a
	// device's new SYN that reuses the 4-tuple of a connection in
	// TIME-WAIT, and the device's connect stalls (SYN retries for up to a
	// minute). A late duplicate FIN gets a reset instead, which a closed
	// socket ignores.
	timeWait := tcpip.TCPTimeWaitTimeoutOption(0)
	for _, opt := range []tcpip.SettableTransportProtocolOption{
		&sack, &moderate, &timeWait,
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20},
		&tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 6 << 20},
	} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return nil, fmt.Errorf("wireguard: tcp option %T: %s", opt, err)
		}
	}
	ep := channel.New(1024, uint32(mtu), "")
	// The TCP sender builds segments of up to 32 KiB and cuts them to the
	// MSS in one pass (gVisor's software GSO), fewer trips through the
	// send path than one segment at a time. Received checksums are not
	// checked again: WireGuard has authenticated every packet.
	ep.SupportedGSOKind = stack.GVisorGSOSupported
	ep.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	if err := s.CreateNIC(nicID, ep); err != nil {
		return nil, fmt.Errorf("wireguard: create NIC: %s", err)
	}
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return nil, fmt.Errorf("wireguard: promiscuous mode: %s", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return nil, fmt.Errorf("wireguard: spoofing: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	ctx, cancel := context.WithCancel(context.Background())
	t := &netTUN{ep: ep, stack: s, mtu: mtu, events: make(chan tun.Event, 1), ctx: ctx, cancel: cancel}
	t.events <- tun.EventUp
	return t, nil
}

func (t *netTUN) File() *os.File           { return nil }
func (t *netTUN) Name() (string, error)    { return "inspectproxy", nil }
func (t *netTUN) MTU() (int, error)        { return t.mtu, nil }
func (t *netTUN) Events() <-chan tun.Event { return t.events }

// BatchSize lets wireguard-go move packets in batches, as its UDP side
// does (recvmmsg/sendmmsg).
func (t *netTUN) BatchSize() int { return conn.IdealBatchSize }

// Read returns what the stack sends to the peers: it waits for one
// packet, then takes whatever else is queued, up to len(bufs).
func (t *netTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := t.ep.ReadContext(t.ctx)
	if pkt == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for pkt != nil {
		size := 0
		for _, s := range pkt.AsSlices() {
			size += copy(bufs[n][offset+size:], s)
		}
		sizes[n] = size
		pkt.DecRef()
		n++
		if n == len(bufs) {
			break
		}
		pkt = t.ep.Read()
	}
	return n, nil
}

// Write hands the peers' decrypted packets to the stack.
func (t *netTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch p[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			return 0, syscall.EAFNOSUPPORT
		}
		// MakeWithData copies: wireguard-go reuses b.
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		t.ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
	return len(bufs), nil
}

// Close stops Read and ends wireguard-go's event reader; the stack is
// closed by the server after its flows.
func (t *netTUN) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		close(t.events)
	})
	return nil
}
