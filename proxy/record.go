package proxy

import (
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/event"
)

// Sink receives each finished event; it must not block (the event sink
// queues and writes on its own goroutine).
type Sink interface {
	Write(ev *event.Event) error
}

// Observer is told about client streams opening (with their kind) and
// closing (with their finished event): metrics, trace export.
type Observer interface {
	ConnOpened(kind string)
	ConnClosed(ev *event.Event)
}

// Live is told each phase of every open stream as it happens (the live
// console). Publish gets a snapshot it may keep; it must not block. The
// proxy builds snapshots of open phases only while Active reports true;
// the closed event is always published (it feeds the history a console
// starts with).
type Live interface {
	Active() bool
	Publish(phase string, ev *event.Event)
}

// Phases published to Live.
const (
	PhaseAccepted      = "accepted"
	PhaseConnected     = "connected" // DNS and TCP connect done (or failed)
	PhaseClientHello   = "client_hello"
	PhaseServerHello   = "server_hello"
	PhaseHandshakeDone = "handshake_done"
	PhaseHTTP          = "http" // an HTTP exchange started or finished
	PhaseFirstFIN      = "first_fin"
	PhaseClosed        = "closed"
)

// Checker adds a verdict (ATS) to a finished event.
type Checker interface {
	Check(ev *event.Event)
}

// emitter finishes events: the verdict, the observers, the sink, the one
// log line. It is shared by every record.
type emitter struct {
	// recorded says whether a target's connections are recorded
	// (capture.only_hosts / ignore_hosts); out of scope they are proxied
	// and leave no event.
	recorded  func(target string) bool
	checker   Checker
	observers []Observer
	live      Live
	sink      Sink

	// open holds the streams open now, while a console may ask for them
	// (only when live is set).
	openMu sync.Mutex
	open   map[*record]struct{}
}

// track adds or removes an open stream, for OpenStreams.
func (e *emitter) track(r *record, open bool) {
	if e.live == nil {
		return
	}
	e.openMu.Lock()
	defer e.openMu.Unlock()
	if open {
		if e.open == nil {
			e.open = make(map[*record]struct{})
		}
		e.open[r] = struct{}{}
	} else {
		delete(e.open, r)
	}
}

func (e *emitter) opened(kind string) {
	for _, o := range e.observers {
		o.ConnOpened(kind)
	}
}

func (e *emitter) emit(ev *event.Event, log *zap.Logger) {
	if !e.recorded(ev.Target) {
		return
	}
	if e.checker != nil && (ev.Kind == event.KindTunnel || ev.Kind == event.KindMITM || ev.Kind == event.KindHTTP) {
		e.checker.Check(ev) // ATS judges HTTP and TLS streams, not lookups or UDP flows
	}
	for _, o := range e.observers { // first, so metrics never lag the events file
		o.ConnClosed(ev)
	}
	if e.live != nil {
		e.live.Publish(PhaseClosed, ev)
	}
	if err := e.sink.Write(ev); err != nil {
		log.Error("event not written", zap.Error(err))
	}
	logSummary(log, ev)
}

// record is one client stream's event while it is open: each layer adds
// its facts under mu, and the owner of the stream finishes it once.
type record struct {
	start time.Time
	log   *zap.Logger
	out   *emitter
	// bounds limits what the record may hold.
	bounds recordBounds

	mu        sync.Mutex
	ev        event.Event
	opened    bool // the observers were told
	upstreams []*upstreamConn
	// size estimates the event's encoded size, for limits.max_event_bytes.
	size int
	// release, when set, runs once the stream is over, before its event
	// is emitted (the slot goes back first).
	release func()
	once    sync.Once
	// phase is the last phase published, for a console that arrives
	// while the stream is open.
	phase string
}

// recordBounds are the per-connection limits on what an event keeps.
type recordBounds struct {
	maxRequests int // http[] entries described; the rest are counted
	maxURL      int // bytes of URL kept per request
	maxBytes    int // estimated encoded size of the event
	maxHeaders  int // bytes of headers kept per request
}

// baseEventSize is what an event without requests takes, roughly: the
// estimate only needs to keep a hostile connection far from the bound.
const baseEventSize = 8 << 10

func newRecord(id string, start time.Time, client, source string, log *zap.Logger, out *emitter, b recordBounds) *record {
	r := &record{start: start, out: out, bounds: b, size: baseEventSize, phase: PhaseAccepted}
	r.ev = event.Event{ID: id, Start: start.UTC(), Client: client, Kind: event.KindHTTP, Source: source}
	// Lazy: most streams never log, and With encodes its fields at once.
	r.log = log.WithLazy(zap.String("id", id), zap.String("client", client))
	out.track(r, true)
	return r
}

// since is the time since the stream began, the zero of every _ms field.
func (r *record) since() time.Duration { return time.Since(r.start) }

// setKind sets the kind and, if not set yet, the target, and tells the
// observers the stream is open.
func (r *record) setKind(kind, target string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev.Kind = kind
	if r.ev.Target == "" {
		r.ev.Target = target
	}
	r.markOpened()
}

// markOpened tells the observers once, with the stream's kind; r.mu held.
// Out of capture scope, nobody is told: the stream leaves no trace.
func (r *record) markOpened() {
	if !r.opened && r.out.recorded(r.ev.Target) {
		r.out.opened(r.ev.Kind)
	}
	r.opened = true
}

// setError keeps the first thing that went wrong.
func (r *record) setError(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ev.Error == "" {
		r.ev.Error = msg
	}
}

// setLimit records that a bound was reached; key is its config key
// (limits.max_connections).
func (r *record) setLimit(key, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ev.Limit == "" {
		r.ev.Limit = key
	}
	if r.ev.Error == "" {
		r.ev.Error = msg
	}
}

// update edits the event under the lock.
func (r *record) update(f func(ev *event.Event)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.ev)
}

// publish tells the live console about a phase, with a snapshot; it costs
// one atomic load when no console is watching.
func (r *record) publish(phase string) {
	l := r.out.live
	if l == nil {
		return
	}
	r.mu.Lock()
	r.phase = phase
	r.mu.Unlock()
	if !l.Active() {
		return
	}
	if ev, ok := r.snapshot(); ok {
		l.Publish(phase, ev)
	}
}

// watched reports whether a live console is watching now, so a layer can
// skip work only a console would see.
func (r *record) watched() bool { return r.out.live != nil && r.out.live.Active() }

// snapshot copies the open stream's event for the live console; ok is
// false for a stream out of capture scope.
func (r *record) snapshot() (*event.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.out.recorded(r.ev.Target) {
		return nil, false
	}
	ev := r.ev
	ev.HTTP = append([]event.HTTP(nil), ev.HTTP...)
	return &ev, true
}

// cut counts something a bound left out; r.mu held.
func (r *record) cut(f func(c *event.Cut)) {
	if r.ev.Cut == nil {
		r.ev.Cut = &event.Cut{}
	}
	r.ev.Truncated = true
	f(r.ev.Cut)
}

// finish writes the event once: build completes it from the layer that
// owned the stream, under no lock.
func (r *record) finish(build func(ev *event.Event)) {
	r.once.Do(func() {
		r.mu.Lock()
		r.markOpened()
		ev := r.ev
		r.mu.Unlock()
		if build != nil {
			build(&ev)
		}
		ev.End = time.Now().UTC()
		r.out.track(r, false)
		if r.release != nil {
			r.release()
		}
		r.out.emit(&ev, r.log.WithLazy(zap.String("target", ev.Target)))
	})
}

// limitMsg is the text of a refusal or a cut by a per-connection bound.
func limitMsg(key string, value any) string {
	return fmt.Sprintf("limits.%s (%v) reached", key, value)
}
