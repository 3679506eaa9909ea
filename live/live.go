// Package live carries each connection's state, as it changes, from the
// proxy to whoever watches it (the web console). The proxy publishes a
// snapshot of the connection's event at each phase; the Hub coalesces
// snapshots per connection and hands batches to subscribers without ever
// making the proxy wait. With nobody watching, Publish of an open phase is
// one atomic load, and the proxy can skip building the snapshot by asking
// Active first.
package live

import "github.com/inspectproxy/inspectproxy/event"

// Phase is the step of a connection that a snapshot follows.
type Phase string

// Phases, in the order they happen on the wire (the proxy's Phase*
// constants). Connected follows DNS and the TCP connect (or their
// failure); HTTP is published per exchange, FirstFIN at the first
// half-close.
const (
	Accepted      Phase = "accepted"
	Connected     Phase = "connected"
	ClientHello   Phase = "client_hello"
	ServerHello   Phase = "server_hello"
	HandshakeDone Phase = "handshake_done"
	HTTP          Phase = "http"
	FirstFIN      Phase = "first_fin"
	Closed        Phase = "closed"
)

// Proxy adapts a Hub to the proxy's Live hook: open phases arrive only
// while the hub is Active, the closed event always, so the history a
// console starts with has no gaps.
type Proxy struct{ *Hub }

// Publish takes a phase from the proxy.
func (p Proxy) Publish(phase string, ev *event.Event) { p.Hub.Publish(Phase(phase), ev) }
