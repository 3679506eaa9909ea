//go:build !linux

package timing

import (
	"net"
	"time"
)

// SockInfo is what the kernel knows of a TCP socket.
type SockInfo struct {
	Closed      bool
	PeerFIN     bool
	SinceRecv   time.Duration
	Unacked     uint32
	RTT         time.Duration
	BytesSent   uint64
	NotSent     uint32
	Retransmits uint32
}

// Info is only implemented on Linux; elsewhere ok is false and callers
// fall back to what the copy loops saw.
func Info(c *net.TCPConn) (SockInfo, bool) { return SockInfo{}, false }

// SocketError is only implemented on Linux.
func SocketError(c *net.TCPConn) error { return nil }

// PeerClosed is only implemented on Linux.
func PeerClosed(c *net.TCPConn) bool { return false }
