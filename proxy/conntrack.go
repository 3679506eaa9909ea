package proxy

import (
	"context"
	"sync"
)

// connTracker is the connection-level state of a Server, like
// http.Server's trackConn and inShutdown: the slots that bound concurrent
// client streams, the count of streams whose event is not written yet, the
// cut registry that ends long-lived streams once the shutdown grace is
// over, and the base context whose cancellation stops dials, probes and
// handshakes still under way.
type connTracker struct {
	slots  chan struct{}
	base   context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	open     int
	shutdown bool
	// idle, when set, is closed when open drops to zero.
	idle chan struct{}
	// cutters end streams that outlive the shutdown grace; nil once it is
	// over, so later ones are cut at once.
	cutters map[any]func()
}

func newConnTracker(maxConns int) *connTracker {
	base, cancel := context.WithCancel(context.Background())
	return &connTracker{
		slots:   make(chan struct{}, maxConns),
		base:    base,
		cancel:  cancel,
		cutters: make(map[any]func()),
	}
}

// admit counts a new client stream and takes a slot for it if one is free.
// It is called on the accepting goroutine, before any goroutine is started
// for the stream, so that shutdown never misses a stream it must wait for.
// Every admit is matched by one free and one done.
func (t *connTracker) admit() (slot bool) {
	t.mu.Lock()
	t.open++
	t.mu.Unlock()
	select {
	case t.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// refusal says why an admitted stream is refused: no slot was free, or
// (with a slot) shutdown had begun.
func (t *connTracker) refusal(slot bool) string {
	if slot {
		return "the proxy is shutting down"
	}
	return limitMsg("max_connections", cap(t.slots))
}

// free gives a stream's slot back. It runs as soon as the stream is over,
// before its event is handed to the sink, so a client that has seen a
// stream end can open the next one at once.
func (t *connTracker) free(slot bool) {
	if slot {
		<-t.slots
	}
}

// done is a stream's end: its event is handed to the sink.
func (t *connTracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open--
	if t.open == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// inShutdown reports whether shutdown has begun.
func (t *connTracker) inShutdown() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.shutdown
}

// beginShutdown marks shutdown and returns a channel closed once no stream
// is open. Callers stop every accept loop first, so no stream is admitted
// after the count is read.
func (t *connTracker) beginShutdown() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.shutdown = true
	ch := make(chan struct{})
	if t.open == 0 {
		close(ch)
	} else {
		t.idle = ch
	}
	return ch
}

// onCut registers cut to end a long-lived stream when the shutdown grace is
// over; the returned func unregisters it. One map entry instead of a
// watcher goroutine per stream keeps idle tunnels cheap.
func (t *connTracker) onCut(key any, cut func()) (undo func()) {
	t.mu.Lock()
	if t.cutters == nil { // already past the grace period
		t.mu.Unlock()
		cut()
		return func() {}
	}
	t.cutters[key] = cut
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.cutters, key)
	}
}

// cutAll ends the grace period: every registered stream is cut and the
// base context is cancelled.
func (t *connTracker) cutAll() {
	t.cancel()
	t.mu.Lock()
	cs := t.cutters
	t.cutters = nil
	t.mu.Unlock()
	for _, cut := range cs {
		cut()
	}
}
