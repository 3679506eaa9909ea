// Package loopback makes connected TCP socket pairs on 127.0.0.1, for
// tests and benchmarks that need real kernel sockets at both ends (a
// net.Pipe has no descriptor to splice, no RST, no half-close).
package loopback

import (
	"errors"
	"net"
)

// Pair returns the two ends of a new TCP connection on 127.0.0.1: the
// dialled one and the accepted one.
func Pair() (dialled, accepted *net.TCPConn, err error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	return Connect(ln)
}

// Connect dials ln, for a test that knows the port beforehand (to capture
// it), and returns the dialled and the accepted end.
func Connect(ln *net.TCPListener) (dialled, accepted *net.TCPConn, err error) {
	dialled, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, nil, err
	}
	accepted, err = ln.AcceptTCP()
	if err != nil {
		return nil, nil, errors.Join(err, dialled.Close())
	}
	return dialled, accepted, nil
}
