package wireguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
)

// tcpFlow is called (in its own goroutine) for each SYN from a peer. The
// device's handshake is completed only once the pipeline has connected
// upstream (Accept), so a refused or unreachable upstream is a reset to
// the device, as if it had connected directly.
func (s *Server) tcpFlow(r *tcp.ForwarderRequest) {
	start := time.Now()
	id := r.ID()
	src, dst := addrPort(id.RemoteAddress, id.RemotePort), addrPort(id.LocalAddress, id.LocalPort)
	peer := s.peerOf(src.Addr())
	if peer == "" || s.inTunnel(dst.Addr()) {
		// Not a peer's address (wireguard-go lets none through), or
		// the tunnel's own network: nothing to connect to there.
		r.Complete(true)
		return
	}
	lookup := s.lookup(peer, dst.Addr())
	release, limit := s.admit(peer)
	if limit != "" {
		r.Complete(true)
		s.emitRefusedTCP(start, src, dst, peer, lookup, limit)
		return
	}
	defer release()

	var (
		once sync.Once
		c    *tcpConn
	)
	complete := func(reset bool) { once.Do(func() { r.Complete(reset) }) }
	st := &stream.Stream{
		Source: event.SourceWireGuard,
		Client: src,
		Peer:   peer,
		Target: dst.String(),
		Start:  start,
		Lookup: lookup,
		Accept: func(netip.AddrPort) (stream.Conn, []byte, error) {
			var wq waiter.Queue
			ep, err := r.CreateEndpoint(&wq)
			complete(err != nil)
			if err != nil {
				return nil, nil, fmt.Errorf("wireguard: handshake with %s (peer %s): %s", src, peer, err)
			}
			c = &tcpConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}
			return c, nil, nil
		},
		Refuse: func(stream.Refusal) { complete(true) },
	}
	s.opts.Handler(s.ctx, st)
	complete(true) // neither Accept nor Refuse: the device gets a reset
	if c != nil {
		_ = c.Close()
	}
}

// emitRefusedTCP writes the event of a flow refused by a cap, which never
// reached the pipeline.
func (s *Server) emitRefusedTCP(start time.Time, src, dst netip.AddrPort, peer string, l *stream.Lookup, limit string) {
	now := time.Now()
	s.log.Warn("wireguard flow over a limit", zap.String("peer", peer), zap.Stringer("dst", dst), zap.String("limit", limit))
	s.opts.Emit(&event.Event{
		ID: s.newID(), Start: start, End: now, Client: src.String(), Target: targetOf(dst, l),
		Kind: event.KindTunnel, Source: event.SourceWireGuard, Peer: peer, Limit: limitKey(limit),
		TCP:   &event.TCP{RST: event.SideProxy, DurationMS: timing.MS(now.Sub(start))},
		Error: fmt.Sprintf("wireguard: %s reached; the device got a reset", limit),
	})
}

// tcpConn is the device's side of a flow as a stream.Conn. Its errors
// carry the errno a kernel socket would give (ECONNRESET for the device's
// reset), so the pipeline tells resets from other failures the same way
// for every source.
type tcpConn struct {
	*gonet.TCPConn
	ep        tcpip.Endpoint
	closeOnce sync.Once
}

func (c *tcpConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	return n, errnoOf(err)
}

func (c *tcpConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	return n, errnoOf(err)
}

// Close closes; a second Close or an Abort after it does nothing.
func (c *tcpConn) Close() error {
	c.closeOnce.Do(func() { _ = c.TCPConn.Close() })
	return nil
}

// Abort resets the connection: the device sees an RST.
func (c *tcpConn) Abort() error {
	c.closeOnce.Do(func() {
		c.ep.Abort()
		_ = c.TCPConn.Close()
	})
	return nil
}

// errnos maps gonet's errors (the text of netstack's tcpip.Error) to the
// errno of a kernel socket.
var errnos = map[string]syscall.Errno{
	(&tcpip.ErrConnectionReset{}).String():   syscall.ECONNRESET,
	(&tcpip.ErrConnectionAborted{}).String(): syscall.ECONNABORTED,
	(&tcpip.ErrClosedForSend{}).String():     syscall.EPIPE,
	(&tcpip.ErrTimeout{}).String():           syscall.ETIMEDOUT,
}

func errnoOf(err error) error {
	var oe *net.OpError
	if err == nil || !errors.As(err, &oe) || oe.Err == nil {
		return err
	}
	if e, ok := errnos[oe.Err.Error()]; ok {
		c := *oe
		c.Err = os.NewSyscallError(oe.Op, e)
		return &c
	}
	return err
}
