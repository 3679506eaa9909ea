package wireguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/quicinitial"
	"github.com/inspectproxy/inspectproxy/timing"
)

// Verdicts of udp events.
const (
	VerdictForwarded = "forwarded"
	VerdictRefused   = "refused"
)

// acceptUDP decides on the first packet of a UDP flow that has no
// endpoint yet. A refused flow's packets are answered with ICMP port
// unreachable by the stack, and counted into one event per flow.
func (s *Server) acceptUDP(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	src, dst := addrPort(id.RemoteAddress, id.RemotePort), addrPort(id.LocalAddress, id.LocalPort)
	peer := s.peerOf(src.Addr())
	if peer == "" {
		return false
	}
	why := ""
	switch {
	case s.inTunnel(dst.Addr()):
		why = fmt.Sprintf("wireguard: %s is inside the tunnel; only the resolver at port 53 answers there", dst)
	case dst.Port() == 443 && s.opts.QUIC == QUICRefuse:
		why = "wireguard: QUIC refused (wireguard.quic: refuse) with ICMP port unreachable, so that the client falls back to TCP"
	case s.opts.CheckDestination != nil:
		if err := s.opts.CheckDestination(src.Addr(), dst); err != nil {
			why = err.Error()
		}
	}
	if why == "" {
		return true
	}
	s.refused.note(src, dst, peer, pkt.Data().AsRange().ToSlice(), why, "")
	return false
}

// udpFlow serves a UDP flow acceptUDP let through: an endpoint in the
// stack for the peer's side, a kernel socket for the destination.
func (s *Server) udpFlow(r *udp.ForwarderRequest) {
	id := r.ID()
	src, dst := addrPort(id.RemoteAddress, id.RemotePort), addrPort(id.LocalAddress, id.LocalPort)
	peer := s.peerOf(src.Addr())
	release, limit := s.admit(peer)
	if limit != "" {
		s.refused.note(src, dst, peer, nil, fmt.Sprintf("wireguard: %s reached", limit), limit)
		return
	}
	start := time.Now()
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		release()
		s.log.Warn("UDP flow endpoint", zap.Stringer("src", src), zap.Stringer("dst", dst), zap.String("error", err.String()))
		return
	}
	go s.relayUDP(gonet.NewUDPConn(&wq, ep), src, dst, peer, start, release)
}

// maxDatagram is the largest datagram relayed (the tunnel's MTU is far below).
const maxDatagram = 65535

func (s *Server) relayUDP(client *gonet.UDPConn, src, dst netip.AddrPort, peer string, start time.Time, release func()) {
	defer release()
	l := s.lookup(peer, dst.Addr())
	ev := &event.Event{
		ID: s.newID(), Start: start, Client: src.String(), Target: targetOf(dst, l),
		Kind: event.KindUDP, Source: event.SourceWireGuard, Peer: peer,
		UDP: &event.UDP{Remote: dst.String(), Verdict: VerdictForwarded},
	}
	defer func() {
		ev.End = time.Now()
		ev.UDP.DurationMS = timing.MS(ev.End.Sub(start))
		s.opts.Emit(ev)
	}()
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		_ = client.Close()
		ev.Error = fmt.Sprintf("wireguard: udp %s: %v", dst, err)
		return
	}
	var last atomic.Int64 // unix nanoseconds of the last datagram either way
	last.Store(start.UnixNano())
	closeBoth := sync.OnceFunc(func() { _ = client.Close(); _ = up.Close() })
	stopShutdown := context.AfterFunc(s.ctx, closeBoth)
	defer stopShutdown()

	var quic *quicinitial.Reader
	if dst.Port() == 443 {
		quic = new(quicinitial.Reader)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer closeBoth()
		ev.UDP.BytesDown, ev.UDP.PacketsDown = s.copyUDP(client, up, &last, nil)
	}()
	ev.UDP.BytesUp, ev.UDP.PacketsUp = s.copyUDP(up, client, &last, quic)
	closeBoth()
	wg.Wait()
	if quic != nil {
		ev.UDP.QUIC, _ = quic.Result()
	}
}

// copyUDP relays datagrams until either side is closed or the flow has
// been quiet both ways for UDPIdleTimeout; quic, when set, reads the
// first datagrams.
func (s *Server) copyUDP(dst, src net.Conn, last *atomic.Int64, quic *quicinitial.Reader) (bytes, packets int64) {
	buf := make([]byte, maxDatagram)
	for {
		deadline := time.Unix(0, last.Load()).Add(s.opts.UDPIdleTimeout)
		_ = src.SetReadDeadline(deadline)
		n, err := src.Read(buf)
		if err != nil {
			if isTimeout(err) && time.Unix(0, last.Load()).Add(s.opts.UDPIdleTimeout).After(time.Now()) {
				continue // the other direction was busy
			}
			return bytes, packets
		}
		last.Store(time.Now().UnixNano())
		bytes += int64(n)
		packets++
		if quic != nil && !quic.Done() {
			quic.Feed(buf[:n])
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return bytes, packets
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// refusedFlows turns the packets of refused UDP flows into one event per
// flow: a flow's event is written once it has been quiet refusedQuiet
// (a QUIC client gives up after the ICMP error, or retransmits a few
// times). At most maxRefused flows are tracked; past that, packets of
// new refused flows are refused without an event, and a warning says so.
type refusedFlows struct {
	s     *Server
	mu    sync.Mutex
	flows map[[2]netip.AddrPort]*refusedFlow
	done  bool
	// emitting counts timer callbacks that took a flow and write its event.
	emitting sync.WaitGroup
}

type refusedFlow struct {
	ev    *event.Event
	quic  *quicinitial.Reader // for UDP port 443
	timer *time.Timer
}

const (
	refusedQuiet = 2 * time.Second
	maxRefused   = 1024
)

func newRefusedFlows(s *Server) *refusedFlows {
	return &refusedFlows{s: s, flows: map[[2]netip.AddrPort]*refusedFlow{}}
}

func (r *refusedFlows) note(src, dst netip.AddrPort, peer string, payload []byte, why, limit string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	k := [2]netip.AddrPort{src, dst}
	f := r.flows[k]
	now := time.Now()
	if f == nil {
		if len(r.flows) >= maxRefused {
			r.s.log.Warn("too many refused UDP flows tracked; this one has no event", zap.Stringer("src", src), zap.Stringer("dst", dst), zap.Int("cap", maxRefused))
			return
		}
		f = &refusedFlow{ev: &event.Event{
			ID: r.s.newID(), Start: now, Client: src.String(), Target: targetOf(dst, r.s.lookup(peer, dst.Addr())),
			Kind: event.KindUDP, Source: event.SourceWireGuard, Peer: peer, Limit: limitKey(limit), Error: why,
			UDP: &event.UDP{Remote: dst.String(), Verdict: VerdictRefused},
		}}
		if dst.Port() == 443 {
			f.quic = new(quicinitial.Reader)
		}
		f.timer = time.AfterFunc(refusedQuiet, func() { r.flushOne(k) })
		r.flows[k] = f
	} else {
		f.timer.Reset(refusedQuiet)
	}
	f.ev.End = now
	f.ev.UDP.PacketsUp++
	f.ev.UDP.BytesUp += int64(len(payload))
	if f.quic != nil && len(payload) > 0 && !f.quic.Done() {
		f.quic.Feed(payload)
	}
}

func (r *refusedFlows) flushOne(k [2]netip.AddrPort) {
	r.mu.Lock()
	f := r.flows[k]
	delete(r.flows, k)
	if f != nil {
		r.emitting.Add(1)
	}
	r.mu.Unlock()
	if f != nil {
		r.emit(f)
		r.emitting.Done()
	}
}

func (r *refusedFlows) emit(f *refusedFlow) {
	f.ev.UDP.DurationMS = timing.MS(f.ev.End.Sub(f.ev.Start))
	if f.quic != nil {
		f.ev.UDP.QUIC, _ = f.quic.Result()
	}
	r.s.opts.Emit(f.ev)
}

// flush writes the events of the flows still tracked (at shutdown), and
// waits for those being written.
func (r *refusedFlows) flush() {
	r.mu.Lock()
	r.done = true
	flows := r.flows
	r.flows = nil
	r.mu.Unlock()
	for _, f := range flows {
		f.timer.Stop()
		r.emit(f)
	}
	r.emitting.Wait()
}
