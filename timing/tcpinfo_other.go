//go:build !linux

package timing

import (
	"net"
)

// Info is only implemented on Linux; elsewhere ok is false and callers
// fall back to what the copy loops saw.
func Info(c *net.TCPConn) (SockInfo, bool) { return SockInfo{}, false }

// SocketError is only implemented on Linux.
func SocketError(c *net.TCPConn) error { return nil }

// PeerClosed is only implemented on Linux.
func PeerClosed(c *net.TCPConn) bool { return false }
