//go:build !linux

package splice

import "net"

// copyTCP is the read/write loop: splice(2) is Linux's.
func (p *Pool) copyTCP(dst, src *net.TCPConn, pr Progress) (int64, error) {
	return copyLoop(dst, src, pr.Moved)
}

// pipes is empty: there are no pipes to pool.
type pipes struct{}

// MaxFDs is 0: without splice(2) a Pool holds no descriptors.
func (p *Pool) MaxFDs() int { return 0 }
