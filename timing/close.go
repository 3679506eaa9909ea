package timing

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Close records how a two-sided connection ended: FIN times per side, the
// side that reset, and the proxy timeout that cut it, if any. It is safe
// for concurrent use by the two copy directions.
type Close struct {
	mu      sync.Mutex
	fin     map[string]time.Duration
	first   string
	rst     string
	timeout string
}

// FIN records that side half-closed at at. Only the first FIN per side counts.
func (c *Close) FIN(side string, at time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fin == nil {
		c.fin = make(map[string]time.Duration, 2)
	}
	if _, ok := c.fin[side]; ok {
		return
	}
	c.fin[side] = at
	if c.first == "" {
		c.first = side
	}
}

// RST records that side reset the connection; the first reset wins.
func (c *Close) RST(side string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rst == "" {
		c.rst = side
	}
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
	Timeout   string
	HalfClose time.Duration // -1 unless both sides sent FIN
}

// Snapshot returns what was recorded.
func (c *Close) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Snapshot{FirstFIN: c.first, RST: c.rst, Timeout: c.timeout, HalfClose: -1, FIN: make(map[string]time.Duration, len(c.fin))}
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

// Abort closes c so that the peer sees a reset rather than a FIN: how a
// proxy passes on a reset it received from the other side.
func Abort(c *net.TCPConn) error {
	_ = c.SetLinger(0)
	return c.Close()
}
