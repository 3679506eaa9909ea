package live

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
)

// Conn is one connection as the hub knows it: its latest snapshot and the
// phase that snapshot follows.
type Conn struct {
	Phase Phase
	Event *event.Event
}

// Encoder turns a batch of changed connections into one message, once per
// flush whatever the number of subscribers.
type Encoder func(changed []Conn) ([]byte, error)

// Options configure a Hub. Zero values take the defaults.
type Options struct {
	// History is how many closed connections are kept for a subscriber
	// that arrives later. Default 10000.
	History int
	// Interval is how often changes are flushed to subscribers. Default 100ms.
	Interval time.Duration
	// Buffer is how many flushed batches a subscriber may fall behind
	// before it is dropped to a resync. Default 32.
	Buffer int
	// MaxPending caps the connections changed between two flushes; past
	// it every subscriber resyncs rather than the hub growing. Default 65536.
	MaxPending int
	// Open, optional, returns snapshots of the connections open now. It is
	// called when the first subscriber arrives, so that connections opened
	// while nobody watched (and so not published) are shown.
	Open func() []Conn
	// Encode builds a batch message. Required.
	Encode Encoder
}

// Hub fans connection snapshots out to subscribers. It is safe for
// concurrent use, and Publish never blocks on a subscriber.
type Hub struct {
	o    Options
	subs atomic.Int32

	mu      sync.Mutex
	open    map[string]Conn // only while someone watches
	closed  []*event.Event  // ring of the last History closed events
	next    int             // where the ring writes next
	pending map[string]Conn // changed since the last flush
	members map[*Sub]struct{}
	kick    chan struct{}
	// gen counts flushes; a subscriber skips batches its State already
	// holds (those swapped out before it subscribed or resynced).
	gen uint64

	batches, dropped, resyncs atomic.Uint64
}

// NewHub returns a Hub; Run flushes it.
func NewHub(o Options) *Hub {
	if o.History <= 0 {
		o.History = 10000
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Buffer <= 0 {
		o.Buffer = 32
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 65536
	}
	return &Hub{
		o:       o,
		closed:  make([]*event.Event, 0, min(o.History, 1024)),
		pending: map[string]Conn{},
		members: map[*Sub]struct{}{},
		kick:    make(chan struct{}, 1),
	}
}

// Active reports whether anyone is subscribed.
func (h *Hub) Active() bool { return h.subs.Load() > 0 }

// Publish records a connection's new snapshot. Open phases are dropped at
// once when nobody watches; a Closed event always joins the history.
func (h *Hub) Publish(phase Phase, ev *event.Event) {
	if ev == nil || (phase != Closed && !h.Active()) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if phase == Closed {
		h.remember(ev)
	}
	if len(h.members) == 0 {
		return
	}
	c := Conn{Phase: phase, Event: ev}
	if phase == Closed {
		delete(h.open, ev.ID)
	} else {
		h.open[ev.ID] = c
	}
	h.pending[ev.ID] = c
	if len(h.pending) > h.o.MaxPending {
		// Too much changed between two flushes: start everyone afresh.
		clear(h.pending)
		for s := range h.members {
			h.lose(s)
		}
	}
}

// Preload adds closed events (oldest first) to the history, e.g. the tail
// of the events file at start.
func (h *Hub) Preload(evs []*event.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		h.remember(ev)
	}
}

// remember appends to the ring of closed events; h.mu held.
func (h *Hub) remember(ev *event.Event) {
	if len(h.closed) < h.o.History {
		h.closed = append(h.closed, ev)
		return
	}
	h.closed[h.next] = ev
	h.next = (h.next + 1) % h.o.History
}

// history returns the closed events, oldest first; h.mu held. Until the
// ring wraps, next is 0 and the rotation is a copy.
func (h *Hub) history() []*event.Event {
	out := make([]*event.Event, 0, len(h.closed))
	out = append(out, h.closed[h.next:]...)
	return append(out, h.closed[:h.next]...)
}

// State is what a subscriber starts from: the history, oldest first, and
// the connections open now.
type State struct {
	Closed []*event.Event
	Open   []Conn
}

// state snapshots the hub; h.mu held.
func (h *Hub) state() State {
	st := State{Closed: h.history(), Open: make([]Conn, 0, len(h.open))}
	for _, c := range h.open {
		st.Open = append(st.Open, c)
	}
	return st
}

// Find returns the latest snapshot of connection id, open or in the history.
func (h *Hub) Find(id string) (Conn, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.open[id]; ok {
		return c, true
	}
	for _, ev := range h.closed {
		if ev.ID == id {
			return Conn{Phase: Closed, Event: ev}, true
		}
	}
	return Conn{}, false
}

// Select returns the events of the given ids that the hub holds, history
// first (oldest first), then open ones; a console exports what it shows.
func (h *Hub) Select(ids map[string]bool) []*event.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*event.Event
	for _, ev := range h.history() {
		if ids[ev.ID] {
			out = append(out, ev)
		}
	}
	for id, c := range h.open {
		if ids[id] {
			out = append(out, c.Event)
		}
	}
	return out
}

// Sub is one subscriber. Read batches from C; when Lost reports true,
// drain C and call Resync for a fresh State.
type Sub struct {
	// C delivers encoded batches; it is closed by Close.
	C    <-chan []byte
	c    chan []byte
	h    *Hub
	lost bool   // h.mu
	from uint64 // h.gen when its State was taken; h.mu
}

// Subscribe registers a subscriber and returns it with the state to start
// from; every change after that state comes on C.
func (h *Hub) Subscribe() (*Sub, State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.members) == 0 {
		h.open = map[string]Conn{}
		if h.o.Open != nil {
			for _, c := range h.o.Open() {
				h.open[c.Event.ID] = c
			}
		}
	}
	c := make(chan []byte, h.o.Buffer)
	s := &Sub{C: c, c: c, h: h, from: h.gen}
	h.members[s] = struct{}{}
	h.subs.Add(1)
	select {
	case h.kick <- struct{}{}: // wake Run from its idle wait
	default:
	}
	return s, h.state()
}

// Lost reports whether batches were dropped because the subscriber fell
// behind; it then gets no more until it calls Resync.
func (s *Sub) Lost() bool {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.lost
}

// Resync returns a fresh State and resumes delivery after it.
func (s *Sub) Resync() State {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.lost = false
	s.from = s.h.gen
	s.h.resyncs.Add(1)
	return s.h.state()
}

// Close unsubscribes and closes C.
func (s *Sub) Close() {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.members[s]; !ok {
		return
	}
	delete(h.members, s)
	h.subs.Add(-1)
	close(s.c)
	if len(h.members) == 0 {
		h.open = nil
		clear(h.pending)
	}
}

// lose marks s as behind; h.mu held.
func (h *Hub) lose(s *Sub) {
	if !s.lost {
		s.lost = true
		h.dropped.Add(1)
	}
}

// Stats are the hub's counters.
type Stats struct {
	Subscribers int    `json:"subscribers"`
	Batches     uint64 `json:"batches"`
	// Dropped counts subscribers that fell behind and were sent to resync.
	Dropped uint64 `json:"dropped"`
	Resyncs uint64 `json:"resyncs"`
}

// Stats returns the counters.
func (h *Hub) Stats() Stats {
	return Stats{Subscribers: int(h.subs.Load()), Batches: h.batches.Load(), Dropped: h.dropped.Load(), Resyncs: h.resyncs.Load()}
}

// Run flushes changes every Interval while anyone watches, until ctx ends.
// With no subscriber it sleeps until one arrives.
func (h *Hub) Run(ctx context.Context) error {
	t := time.NewTicker(h.o.Interval)
	defer t.Stop()
	for {
		if !h.Active() {
			select {
			case <-ctx.Done():
				return nil
			case <-h.kick:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := h.Flush(); err != nil {
			return err
		}
	}
}

// Flush encodes what changed since the last flush, once, and offers it to
// every subscriber that is keeping up. Run calls it every Interval.
func (h *Hub) Flush() error {
	h.mu.Lock()
	if len(h.pending) == 0 || len(h.members) == 0 {
		h.mu.Unlock()
		return nil
	}
	changed := make([]Conn, 0, len(h.pending))
	for _, c := range h.pending {
		changed = append(changed, c)
	}
	clear(h.pending)
	h.gen++
	gen := h.gen
	h.mu.Unlock()

	msg, err := h.o.Encode(changed)
	if err != nil {
		return err
	}
	h.batches.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.members {
		if s.lost || s.from >= gen {
			continue
		}
		select {
		case s.c <- msg:
		default:
			h.lose(s)
		}
	}
	return nil
}
