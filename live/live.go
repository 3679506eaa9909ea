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

// Publisher is what the proxy calls. ev is a snapshot the publisher does
// not touch again: the connection's event as it stands, End zero while
// open; at Closed it is the event written to the events file.
type Publisher interface {
	// Active reports whether anyone watches. Open phases may be skipped
	// (and their snapshots not built) when it is false; Closed should
	// always be published, it feeds the history a console starts with.
	Active() bool
	Publish(phase Phase, ev *event.Event)
}

// Proxy adapts a Hub to the proxy's two hooks: its Live (open phases,
// built only while Active) and one of its Observers (closed events, which
// the proxy gives observers whether or not anyone watches, so the history
// a console starts with has no gaps). Register the same value as both;
// the closed phase given to Live is left to ConnClosed so that it is not
// counted twice.
type Proxy struct{ *Hub }

// Publish takes an open phase from the proxy.
func (p Proxy) Publish(phase string, ev *event.Event) {
	if Phase(phase) != Closed {
		p.Hub.Publish(Phase(phase), ev)
	}
}

// ConnOpened is a no-op: the Accepted phase says it with the snapshot.
func (Proxy) ConnOpened(string) {}

// ConnClosed takes the finished event.
func (p Proxy) ConnClosed(ev *event.Event) { p.Hub.Publish(Closed, ev) }
