// Package wireguard is inspectproxy's WireGuard mode: a userspace
// WireGuard server (wireguard-go) whose peers' packets end in a userspace
// TCP/IP stack (gVisor's netstack), so that a whole phone is captured,
// apps that ignore the system proxy included, with no root and no kernel
// module on the machine. Each TCP flow becomes a stream.Stream for the
// proxy's one pipeline (which dials, inspects and writes its event); DNS
// lookups sent to the tunnel's resolver and UDP flows become dns and udp
// events here, and a later connection to an address a lookup answered is
// linked to that lookup (stream.Lookup).
package wireguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	lru "github.com/hashicorp/golang-lru/v2"
	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/stream"
)

// What happens to a peer's UDP to port 443 (QUIC).
const (
	// QUICRefuse answers ICMP port unreachable, so that clients fall back
	// to TCP, where the pipeline sees the TLS handshake.
	QUICRefuse = "refuse"
	// QUICPass forwards it like other UDP.
	QUICPass = "pass"
)

// Resolver resolves names on the host; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options configure a Server. Zero values take the defaults named.
type Options struct {
	// Listen is the UDP host:port. An empty or unspecified host (":51820",
	// "0.0.0.0:51820") binds every address, IPv4 and IPv6; a named host
	// binds that address only (a name is resolved once, to its first
	// address).
	Listen string
	// Store holds the server key and the peers.
	Store *Store
	// Network is the IPv4 prefix of tunnel addresses; its first host is
	// the server's, where the tunnel's DNS resolver answers.
	Network netip.Prefix
	// Network6, when valid, gives each peer an IPv6 address too.
	Network6 netip.Prefix
	// MTU of the tunnel. Default 1420, as wg-quick.
	MTU int
	// QUIC is QUICRefuse (default) or QUICPass.
	QUIC string
	// MaxConnections caps the TCP and UDP flows of all peers together;
	// MaxConnectionsPerPeer those of one peer. Over a cap a TCP flow is
	// reset and a UDP flow dropped, with an event naming the limit.
	MaxConnections, MaxConnectionsPerPeer int
	// UDPIdleTimeout ends a UDP flow quiet both ways this long. Default 60s.
	UDPIdleTimeout time.Duration
	// LookupTimeout bounds one DNS resolve on the host. Default 10s.
	LookupTimeout time.Duration
	// ShutdownGrace is how long open flows get when Serve's context ends
	// before the stack is closed under them. Default 10s.
	ShutdownGrace time.Duration
	// Handler serves each TCP flow: the proxy's pipeline.
	Handler func(context.Context, *stream.Stream)
	// Emit receives the dns and udp events.
	Emit func(*event.Event)
	// CheckDestination is the destination policy (deny list, the proxy's
	// own addresses) for UDP flows; TCP flows are checked by the pipeline.
	CheckDestination func(client netip.Addr, dst netip.AddrPort) error
	// Resolver resolves the peers' lookups. Default net.DefaultResolver.
	Resolver Resolver
	Log      *zap.Logger
}

// Limit names, as in events' limit field.
const (
	LimitPerPeer = "wireguard.max_connections_per_peer"
	LimitTotal   = "wireguard.max_connections"
	// LimitShutdown is not a bound: the flow came as the server stopped,
	// and its event has no limit.
	LimitShutdown = "shutdown"
)

// Server is a running WireGuard server.
type Server struct {
	opts   Options
	log    *zap.Logger
	tun    *netTUN
	dev    *device.Device
	port   uint16
	dns    []netip.Addr
	server Key

	// ctx ends when Serve's context does: handlers see the shutdown.
	ctx  context.Context
	stop context.CancelFunc

	peers     atomic.Pointer[map[netip.Addr]string]
	peerKeys  map[Key]bool // configured in the device; guarded by reloadMu
	reloadMu  sync.Mutex
	links     *lru.Cache[linkKey, link]
	refused   *refusedFlows
	dnsSem    chan struct{}
	idPrefix  string
	idCounter atomic.Uint64

	// dnsConns are the resolver's sockets; bg counts their goroutines
	// and the lookups they run.
	dnsConns []io.Closer
	bg       sync.WaitGroup

	mu       sync.Mutex
	perPeer  map[string]int
	total    int
	closing  bool
	flows    sync.WaitGroup
	watching sync.WaitGroup
}

// linkKey is a peer and an address its lookup answered; link is the
// lookup and when it was answered. (The cache without expiry is used:
// the expiring one keeps a goroutine it cannot stop.)
type linkKey struct {
	peer string
	addr netip.Addr
}

type link struct {
	lookup stream.Lookup
	at     time.Time
}

// answerTTL is the TTL of the tunnel resolver's answers; a lookup is
// linked to connections for linkTTL, which covers devices that keep an
// answer past its TTL while a connection is being set up.
const (
	answerTTL      = 60
	linkTTL        = 5 * time.Minute
	maxLinks       = 16384
	maxDNSInFlight = 256
)

// New starts the WireGuard device on its UDP port with the stored peers
// (the server key is made on first use). Flows are served at once; call
// Serve to run until a context ends.
func New(opts Options) (*Server, error) {
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	if opts.QUIC == "" {
		opts.QUIC = QUICRefuse
	}
	if opts.UDPIdleTimeout == 0 {
		opts.UDPIdleTimeout = 60 * time.Second
	}
	if opts.LookupTimeout == 0 {
		opts.LookupTimeout = 10 * time.Second
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 4096
	}
	if opts.MaxConnectionsPerPeer == 0 {
		opts.MaxConnectionsPerPeer = opts.MaxConnections
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Handler == nil || opts.Emit == nil || opts.Store == nil {
		return nil, errors.New("wireguard: Handler, Emit and Store are required")
	}
	if !opts.Network.Addr().Is4() {
		return nil, fmt.Errorf("wireguard: network %s: want an IPv4 prefix", opts.Network)
	}
	host, portStr, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("wireguard: listen %q: %w", opts.Listen, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("wireguard: listen %q: port: %w", opts.Listen, err)
	}
	bind, err := listenBind(host)
	if err != nil {
		return nil, fmt.Errorf("wireguard: listen %q: %w", opts.Listen, err)
	}
	key, err := opts.Store.ServerKey()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:     opts,
		log:      opts.Log,
		server:   key,
		peerKeys: map[Key]bool{},
		dnsSem:   make(chan struct{}, maxDNSInFlight),
		perPeer:  map[string]int{},
		idPrefix: randomPrefix(),
	}
	s.links, _ = lru.New[linkKey, link](maxLinks) // fails only for a size <= 0
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.refused = newRefusedFlows(s)
	s.dns = DNSAddrs(opts.Network, opts.Network6)
	if s.tun, err = newNetTUN(opts.MTU); err != nil {
		return nil, err
	}
	if err := s.startStack(); err != nil {
		for _, c := range s.dnsConns {
			_ = c.Close()
		}
		s.tun.stack.Destroy()
		s.bg.Wait()
		return nil, err
	}
	s.dev = device.NewDevice(s.tun, bind, &device.Logger{
		Verbosef: s.log.Sugar().Named("wireguard-go").Debugf,
		Errorf:   s.log.Sugar().Named("wireguard-go").Debugf,
	})
	if err := s.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", key.hex(), port)); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("wireguard: listen %q: %w", opts.Listen, err)
	}
	if err := s.Reload(); err != nil {
		s.closeAll()
		return nil, err
	}
	if err := s.dev.Up(); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("wireguard: listen %q: %w", opts.Listen, err)
	}
	if s.port, err = s.listenPort(); err != nil {
		s.closeAll()
		return nil, err
	}
	return s, nil
}

// listenBind is the UDP side for a listen host: wireguard-go's own bind
// for every address, hostBind for one.
func listenBind(host string) (conn.Bind, error) {
	if host == "" {
		return conn.NewDefaultBind(), nil
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		addrs, lerr := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
		if lerr != nil {
			return nil, lerr
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("host %q has no address", host)
		}
		addr = addrs[0]
	}
	if addr.Zone() != "" {
		return nil, fmt.Errorf("host %q: a zoned address cannot be bound", host)
	}
	if addr.Unmap().IsUnspecified() {
		return conn.NewDefaultBind(), nil
	}
	return newHostBind(addr), nil
}

// DNSAddrs are the tunnel resolver's addresses: the first host of each
// network.
func DNSAddrs(network, network6 netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, p := range []netip.Prefix{network, network6} {
		if a, ok := nthHost(p, 1); ok {
			out = append(out, a)
		}
	}
	return out
}

func randomPrefix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "wg" + hex.EncodeToString(b[:])
}

// startStack gives the stack the resolver's addresses and the TCP and
// UDP forwarders that take every other destination.
func (s *Server) startStack() error {
	st := s.tun.stack
	for _, a := range s.dns {
		proto := header.IPv4ProtocolNumber
		if a.Is6() {
			proto = header.IPv6ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := st.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("wireguard: address %s: %s", a, err)
		}
		if err := s.startDNS(a); err != nil {
			return err
		}
	}
	// maxInFlight bounds handshakes waiting for their upstream dial; a SYN
	// past it is dropped and the device retransmits it.
	fwd := tcp.NewForwarder(st, 0, s.opts.MaxConnections, s.tcpFlow)
	st.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	udpFwd := udp.NewForwarder(st, s.udpFlow)
	st.SetTransportProtocolHandler(udp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		if !s.acceptUDP(id, pkt) {
			return false // the stack answers ICMP port unreachable
		}
		return udpFwd.HandlePacket(id, pkt)
	})
	return nil
}

func (s *Server) listenPort() (uint16, error) {
	cfg, err := s.dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("wireguard: %w", err)
	}
	for line := range strings.Lines(cfg) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "listen_port="); ok {
			p, err := strconv.ParseUint(v, 10, 16)
			return uint16(p), err
		}
	}
	return 0, errors.New("wireguard: device reports no listen port")
}

// Port is the UDP port the server listens on.
func (s *Server) Port() uint16 { return s.port }

// PublicKey is the server's public key.
func (s *Server) PublicKey() Key { return s.server.Public() }

// Reload reads the peers from the store and configures the device: new
// peers may connect, removed ones no longer can, and the others keep
// their sessions.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	peers, err := s.opts.Store.Peers()
	if err != nil {
		return err
	}
	var b strings.Builder
	byAddr := map[netip.Addr]string{}
	keys := map[Key]bool{}
	for _, p := range peers {
		keys[p.PublicKey] = true
		fmt.Fprintf(&b, "public_key=%s\nreplace_allowed_ips=true\n", p.PublicKey.hex())
		for _, a := range p.Addresses {
			byAddr[a] = p.Name
			fmt.Fprintf(&b, "allowed_ip=%s\n", netip.PrefixFrom(a, a.BitLen()))
		}
	}
	for k := range s.peerKeys {
		if !keys[k] {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", k.hex())
		}
	}
	if err := s.dev.IpcSet(b.String()); err != nil {
		return fmt.Errorf("wireguard: configure peers: %w", err)
	}
	s.peerKeys = keys
	s.peers.Store(&byAddr)
	return nil
}

// peerOf names the peer a tunnel address belongs to; wireguard-go has
// already dropped packets whose source is not the sending peer's.
func (s *Server) peerOf(a netip.Addr) string {
	return (*s.peers.Load())[a]
}

// inTunnel reports whether a is one of the tunnel's own addresses, which
// are never dialled on the host.
func (s *Server) inTunnel(a netip.Addr) bool {
	return s.opts.Network.Contains(a) || (s.opts.Network6.IsValid() && s.opts.Network6.Contains(a))
}

// limitKey is what an event's limit says: the config key, or nothing for
// a flow refused at shutdown.
func limitKey(limit string) string {
	if limit == LimitShutdown {
		return ""
	}
	return limit
}

// admit counts a flow against the caps; release undoes it.
func (s *Server) admit(peer string) (release func(), limit string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return nil, LimitShutdown
	case s.total >= s.opts.MaxConnections:
		return nil, LimitTotal
	case s.perPeer[peer] >= s.opts.MaxConnectionsPerPeer:
		return nil, LimitPerPeer
	}
	s.total++
	s.perPeer[peer]++
	s.flows.Add(1)
	return sync.OnceFunc(func() {
		s.mu.Lock()
		s.total--
		if s.perPeer[peer]--; s.perPeer[peer] == 0 {
			delete(s.perPeer, peer)
		}
		s.mu.Unlock()
		s.flows.Done()
	}), ""
}

// newID is an event id: a random per-server prefix and a counter.
func (s *Server) newID() string {
	return fmt.Sprintf("%s-%d", s.idPrefix, s.idCounter.Add(1))
}

// Serve runs until ctx ends, reloading the peers when the store changes
// (`inspectproxy wireguard peer add` in another terminal). Then open
// flows get ShutdownGrace to finish before the stack is closed under
// them; every flow's event is emitted before Serve returns.
func (s *Server) Serve(ctx context.Context) error {
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Warn("not watching the peers file; restart to pick up new peers", zap.Error(err))
	} else if err := w.Add(s.opts.Store.Dir()); err != nil {
		s.log.Warn("not watching the peers file; restart to pick up new peers", zap.Error(err))
		_ = w.Close()
	} else {
		s.watching.Add(1)
		go s.watch(w)
		defer func() { _ = w.Close(); s.watching.Wait() }()
	}
	<-ctx.Done()
	s.shutdown()
	return nil
}

func (s *Server) watch(w *fsnotify.Watcher) {
	defer s.watching.Done()
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Base(ev.Name) != peersFile || !ev.Has(fsnotify.Create|fsnotify.Write|fsnotify.Rename) {
				continue
			}
			if err := s.Reload(); err != nil {
				s.log.Error("reloading peers", zap.Error(err))
			} else {
				s.log.Info("peers reloaded", zap.Int("peers", len(*s.peers.Load())))
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("watching the peers file", zap.Error(err))
		}
	}
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.stop()
	done := make(chan struct{})
	go func() { s.flows.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.opts.ShutdownGrace):
		s.log.Info("shutdown grace over; closing the tunnel's open flows")
	}
	// Reset what is left, so that its relays end and write their events.
	for _, ep := range s.tun.stack.RegisteredEndpoints() {
		ep.Abort()
	}
	<-done
	s.refused.flush()
	s.closeAll()
}

// closeAll stops the device (its UDP socket and the tun) and the stack
// with the resolver's sockets, and waits for their goroutines.
func (s *Server) closeAll() {
	s.stop()
	s.dev.Close()
	for _, c := range s.dnsConns {
		_ = c.Close()
	}
	s.tun.stack.Destroy()
	s.bg.Wait()
}

// addrPort converts a stack address.
func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

// lookup is the peer's latest lookup through the tunnel that answered
// dst, if any.
func (s *Server) lookup(peer string, dst netip.Addr) *stream.Lookup {
	if l, ok := s.links.Get(linkKey{peer, dst}); ok && time.Since(l.at) < linkTTL {
		return &l.lookup
	}
	return nil
}

// targetOf is what an event shows for dst: the name the peer looked up,
// when the address came from its lookup.
func targetOf(dst netip.AddrPort, l *stream.Lookup) string {
	if l != nil {
		return net.JoinHostPort(l.Name, strconv.Itoa(int(dst.Port())))
	}
	return dst.String()
}
