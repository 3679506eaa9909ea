// Package stream is the contract between the sources that bring a client's
// TCP stream to the proxy (an HTTP CONNECT, a SOCKS5 CONNECT, a flow from a
// WireGuard peer) and the pipeline that serves every such stream the same
// way: admit, dial (timed), read the ClientHello, route, relay or decrypt,
// one event. A source knows its own handshake with the client; the
// pipeline knows nothing of it but these few calls.
package stream

import (
	"net"
	"net/netip"
	"time"
)

// Stream is one client stream asking to reach Target.
type Stream struct {
	// Source is event.SourceHTTP, event.SourceSOCKS5 or event.SourceWireGuard.
	Source string
	// Client is the client's address (for WireGuard: its tunnel address).
	Client netip.AddrPort
	// Peer names the WireGuard peer, if any.
	Peer string
	// Target is host:port as the client asked for it; a name is resolved
	// by the pipeline.
	Target string
	// Start is when the client stream began (the accept of the client
	// connection, or the peer's SYN): the zero of every *_ms in its event.
	Start time.Time
	// Lookup, when set, says that Target's address came from the client's
	// own DNS lookup of a name (WireGuard mode): the event shows the name
	// as its target and the lookup's time as tcp.dns_ms.
	Lookup *Lookup
	// ID, when set, is the event id to use (a CONNECT on an HTTP
	// connection whose id is already known).
	ID string

	// Accept is called once the upstream is connected, with its address:
	// the source completes its handshake with the client (CONNECT 200,
	// SOCKS5 success, the TCP SYN-ACK) and returns the client's side and
	// any bytes the client sent behind its request.
	Accept func(upstream netip.AddrPort) (Conn, []byte, error)
	// Refuse is called instead of Accept when the stream will not be
	// served; the source answers the client in its own protocol.
	Refuse func(Refusal)
}

// Lookup is a DNS lookup the client made before connecting.
type Lookup struct {
	Name     string
	Duration time.Duration
}

// Conn is the client's side of an accepted stream.
type Conn interface {
	net.Conn
	// CloseWrite sends a FIN: the client sees the server's half-close.
	CloseWrite() error
	// Abort closes so that the client sees a reset.
	Abort() error
}

// Reason is why a stream was refused.
type Reason int

// Reasons a stream is refused, which each source maps to its own answer.
const (
	// Denied: the access rules refuse the client or the destination
	// (CONNECT 403, SOCKS5 0x02, WireGuard RST).
	Denied Reason = iota + 1
	// Unreachable: DNS failed, the connect was refused or timed out
	// (CONNECT 502, SOCKS5 0x04/0x05/0x06, WireGuard RST or ICMP).
	Unreachable
	// Overloaded: a limit was reached (CONNECT 503, SOCKS5 0x01).
	Overloaded
)

// Refusal is a refused stream: why, and the error with its evidence.
type Refusal struct {
	Reason Reason
	Err    error
}

// TCP is a kernel TCP connection as a Conn. The relay unwraps it to keep
// splice(2) between two kernel sockets.
type TCP struct{ *net.TCPConn }

// Abort closes with SO_LINGER 0, so the peer gets an RST.
func (c TCP) Abort() error {
	_ = c.SetLinger(0)
	return c.Close()
}
