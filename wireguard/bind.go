package wireguard

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// hostBind is a conn.Bind on one address. wireguard-go's StdNetBind takes
// a port only and binds it on every address of the host, which would
// expose the WireGuard port on interfaces the user did not name (the
// upstream has no option for it; siderolabs/omni#2209 wrote its own bind
// for the same reason). One UDP socket, read and written in batches with
// recvmmsg/sendmmsg, and sent with UDP GSO where the kernel has it, as
// StdNetBind does: without GSO a download through the tunnel ran at 0.7×
// of StdNetBind's, with it on par (108–121 against 108–134 MB/s). Receive
// offload (GRO) is not used: what a device sends is mostly ACKs.
type hostBind struct {
	addr netip.Addr

	mu   sync.Mutex
	conn *net.UDPConn
	bc   batchConn
	gso  atomic.Bool
	msgs sync.Pool // *[]ipv6.Message for Send
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share (their
// Message types are the same type).
type batchConn interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
}

// bindSocketBuffer is StdNetBind's socket buffer size (7 MiB); Linux
// clamps it to net.core.rmem_max/wmem_max.
const bindSocketBuffer = 7 << 20

func newHostBind(addr netip.Addr) *hostBind {
	b := &hostBind{addr: addr.Unmap()}
	b.msgs.New = func() any {
		ms := make([]ipv6.Message, conn.IdealBatchSize)
		return &ms
	}
	return b
}

var _ conn.Bind = (*hostBind)(nil)

func (b *hostBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	network := "udp4"
	if b.addr.Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.addr, port)))
	if err != nil {
		return nil, 0, err
	}
	_ = c.SetReadBuffer(bindSocketBuffer)
	_ = c.SetWriteBuffer(bindSocketBuffer)
	var bc batchConn = ipv6.NewPacketConn(c)
	if network == "udp4" {
		bc = ipv4.NewPacketConn(c)
	}
	b.conn, b.bc = c, bc
	b.gso.Store(udpGSO(c))
	return []conn.ReceiveFunc{b.receiver(bc)}, c.LocalAddr().(*net.UDPAddr).AddrPort().Port(), nil
}

// receiver is called from one goroutine only, so its messages are its own.
func (b *hostBind) receiver(bc batchConn) conn.ReceiveFunc {
	ms := make([]ipv6.Message, conn.IdealBatchSize)
	for i := range ms {
		ms[i].Buffers = make([][]byte, 1)
	}
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n := min(len(packets), len(ms))
		for i := range n {
			ms[i].Buffers[0] = packets[i]
		}
		got, err := bc.ReadBatch(ms[:n], 0)
		if err != nil {
			return 0, err
		}
		for i := range got {
			sizes[i] = ms[i].N
			ua, _ := ms[i].Addr.(*net.UDPAddr)
			if ua == nil {
				sizes[i] = 0 // wireguard-go skips empty packets
				continue
			}
			ap := ua.AddrPort()
			eps[i] = &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
		}
		return got, nil
	}
}

func (b *hostBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return nil
	}
	err := b.conn.Close()
	b.conn, b.bc = nil, nil
	return err
}

// SetMark is for fwmark routing, which this server does not configure.
func (b *hostBind) SetMark(uint32) error { return nil }

func (b *hostBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	se, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	bc := b.bc
	b.mu.Unlock()
	if bc == nil {
		return net.ErrClosed
	}
	if se.Addr().Is4() != b.addr.Is4() {
		return errors.New("wireguard: endpoint " + se.DstToString() + " is not of the listen address's family (" + b.addr.String() + ")")
	}
	ua := net.UDPAddrFromAddrPort(se.AddrPort)
	p := b.msgs.Get().(*[]ipv6.Message)
	defer b.msgs.Put(p)
	ms := *p
	if b.gso.Load() {
		err := writeAll(bc, ms[:coalesce(ms, bufs, ua, b.addr.Is4())])
		if !gsoRefused(err) {
			return err
		}
		b.gso.Store(false)
	}
	for i := range bufs {
		ms[i].Buffers, ms[i].OOB, ms[i].Addr = bufs[i:i+1], ms[i].OOB[:0], ua
	}
	return writeAll(bc, ms[:len(bufs)])
}

// UDP GSO's limits: one send carries at most 64 segments, and all of them
// must fit one IP packet's length field.
const (
	gsoMaxSegments = 64
	maxUDP4Payload = 1<<16 - 1 - 20 - 8
	maxUDP6Payload = 1<<16 - 1 - 8
)

// coalesce fills ms for one GSO send and returns how many it used: each
// run of same-sized packets (the last of a run may be shorter) is one
// message whose iovecs are the packets, cut by the kernel at the size.
func coalesce(ms []ipv6.Message, bufs [][]byte, ua *net.UDPAddr, v4 bool) int {
	maxPayload := maxUDP6Payload
	if v4 {
		maxPayload = maxUDP4Payload
	}
	n := 0
	for i := 0; i < len(bufs); n++ {
		size, total, j := len(bufs[i]), len(bufs[i]), i+1
		for j < len(bufs) && j-i < gsoMaxSegments && len(bufs[j]) <= size && total+len(bufs[j]) <= maxPayload {
			total += len(bufs[j])
			j++
			if len(bufs[j-1]) < size {
				break // a shorter packet ends its run
			}
		}
		m := &ms[n]
		m.Buffers, m.OOB, m.Addr = bufs[i:j], m.OOB[:0], ua
		if j-i > 1 {
			m.OOB = appendGSO(m.OOB, uint16(size))
		}
		i = j
	}
	return n
}

// writeAll sends every message; sendmmsg may take fewer at a time.
func writeAll(bc batchConn, ms []ipv6.Message) error {
	for len(ms) > 0 {
		sent, err := bc.WriteBatch(ms, 0)
		if err != nil {
			return err
		}
		ms = ms[sent:]
	}
	return nil
}

func (b *hostBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

func (b *hostBind) BatchSize() int { return conn.IdealBatchSize }
