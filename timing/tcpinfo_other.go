//go:build !linux

package timing

import (
	"net"
	"time"
)

// SockInfo is what the kernel knows of a TCP socket.
type SockInfo struct {
	Closed    bool
	PeerFIN   bool
	SinceRecv time.Duration
}

// Info is only implemented on Linux; elsewhere ok is false and callers
// fall back to what the copy loops saw.
func Info(c *net.TCPConn) (SockInfo, bool) { return SockInfo{}, false }

// HandshakeRTT is only known on Linux; elsewhere Connect is the proxy's clock.
func HandshakeRTT(*net.TCPConn) (time.Duration, bool) { return 0, false }
