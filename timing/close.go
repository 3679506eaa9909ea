package timing

import (
	"errors"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
)

// Close records how a two-sided connection ended: FIN times per side, who
// reset and why, the proxy timeout that cut it, and the history of what
// happened in order (Zeek conn.log letters). It is safe for concurrent use
// by the two copy directions and the timers.
type Close struct {
	mu       sync.Mutex
	fin      map[string]time.Duration
	first    string
	rst      string
	rstCause string
	rstAt    time.Duration
	timeout  string
	history  []byte
}

// History letters, after Zeek's conn.log: uppercase for the originator
// (the client of a tunnel, or the proxy on an upstream it dialled),
// lowercase for the responder (the server).
const (
	HistAccept = 'S' // the originator's connection was accepted (its handshake done)
	HistSynAck = 'h' // the server accepted the connection (SYN-ACK)
	HistData   = 'D' // first data (upper: originator, lower: server)
	HistFIN    = 'F' // FIN
	HistRST    = 'R' // RST
	// HistProxyCut is the proxy itself resetting both sides (a timeout,
	// a limit, shutdown): not a letter of Zeek's, which sees two hosts.
	HistProxyCut = '!'
)

// Mark adds a history letter for side: the originator's in upper case,
// the server's in lower case. Like Zeek, each letter is kept once.
func (c *Close) Mark(side string, letter byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mark(side, letter)
}

// letterFor is letter as side writes it.
// The proxy's own reset is '!'; its FIN on an upstream it dialled is the
// originator's, upper case.
func letterFor(side string, letter byte) byte {
	switch {
	case side == event.SideServer:
		return letter | 0x20 // lower case
	case side == event.SideProxy && letter == HistRST:
		return HistProxyCut
	}
	return letter &^ 0x20
}

func (c *Close) mark(side string, letter byte) {
	letter = letterFor(side, letter)
	if !slices.Contains(c.history, letter) {
		c.history = append(c.history, letter)
	}
}

// FIN records that side half-closed at at. Only the first FIN per side
// counts. It reports whether this was the connection's first FIN recorded.
func (c *Close) FIN(side string, at time.Duration) (first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fin == nil {
		c.fin = make(map[string]time.Duration, 2)
	}
	if _, ok := c.fin[side]; ok {
		return false
	}
	c.fin[side] = at
	switch {
	case c.first == "":
		c.first = side
		first = true
	case at < c.fin[c.first]:
		// The two directions race to record their FIN; the earlier time
		// is the first FIN, and its letter goes before the other's.
		other := c.first
		c.first = side
		c.mark(side, HistFIN)
		c.history = moveBefore(c.history, letterFor(side, HistFIN), letterFor(other, HistFIN))
		return false
	}
	c.mark(side, HistFIN)
	return first
}

// moveBefore moves letter a just before letter b in h (both present).
func moveBefore(h []byte, a, b byte) []byte {
	i, j := slices.Index(h, a), slices.Index(h, b)
	if i < 0 || j < 0 || i < j {
		return h
	}
	h = slices.Delete(h, i, i+1)
	return slices.Insert(h, j, a)
}

// HasFIN reports whether side's FIN was recorded.
func (c *Close) HasFIN(side string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.fin[side]
	return ok
}

// FirstFIN is the side whose FIN came first, or "".
func (c *Close) FirstFIN() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

// RSTBy is the side that reset the connection, or "".
func (c *Close) RSTBy() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rst
}

// RST records that side reset the connection at at, and why if known;
// the first reset wins. It reports whether this was the first.
func (c *Close) RST(side, cause string, at time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rst != "" {
		return false
	}
	c.rst, c.rstCause, c.rstAt = side, cause, at
	c.mark(side, HistRST)
	return true
}

// Timeout records which proxy timeout ended the connection.
func (c *Close) Timeout(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timeout == "" {
		c.timeout = name
	}
}

// Snapshot is a Close's state.
type Snapshot struct {
	FirstFIN  string
	FIN       map[string]time.Duration
	RST       string
	RSTCause  string
	RSTAt     time.Duration // when the reset was seen; valid when RST is set
	Timeout   string
	HalfClose time.Duration // -1 unless both sides sent FIN
	History   string
}

// Snapshot returns what was recorded.
func (c *Close) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Snapshot{FirstFIN: c.first, RST: c.rst, RSTCause: c.rstCause, RSTAt: c.rstAt, Timeout: c.timeout, HalfClose: -1,
		FIN: make(map[string]time.Duration, len(c.fin)), History: string(c.history)}
	for k, v := range c.fin {
		s.FIN[k] = v
	}
	if len(c.fin) == 2 {
		var ts []time.Duration
		for _, v := range c.fin {
			ts = append(ts, v)
		}
		s.HalfClose = max(ts[0], ts[1]) - min(ts[0], ts[1])
	}
	return s
}

// IsReset reports whether err is a connection reset or a write to a reset
// connection.
func IsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}
