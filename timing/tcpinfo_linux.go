package timing

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// SockInfo is what the kernel knows of a TCP socket.
type SockInfo struct {
	// Closed is true once the socket is in TCP_CLOSE: it was reset, or
	// both FINs were exchanged and acknowledged.
	Closed bool
	// PeerFIN is true once the peer's FIN has arrived (CLOSE_WAIT or later),
	// whether or not anyone has read up to it.
	PeerFIN bool
	// SinceRecv is the time since data last arrived from the peer.
	SinceRecv time.Duration
}

// Info reads TCP_INFO for c. ok is false where the kernel does not say.
func Info(c *net.TCPConn) (info SockInfo, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return info, false
	}
	var ti *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) { ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || serr != nil {
		return info, false
	}
	return SockInfo{
		Closed:    ti.State == unix.BPF_TCP_CLOSE,
		PeerFIN:   ti.State == unix.BPF_TCP_CLOSE_WAIT || ti.State == unix.BPF_TCP_LAST_ACK || ti.State == unix.BPF_TCP_CLOSING || ti.State == unix.BPF_TCP_TIME_WAIT,
		SinceRecv: time.Duration(ti.Last_data_recv) * time.Millisecond,
	}, true
}

// HandshakeRTT is the kernel's round trip of the handshake a connect just
// made, read from TCP_INFO (tcpi_rtt): its first RTT sample runs from the
// SYN's transmission to the SYN/ACK, in microseconds, and as long as
// nothing has been sent on c since, nothing has updated it. A
// retransmitted SYN gives no sample (Karn's rule), so then ok is false.
func HandshakeRTT(c *net.TCPConn) (rtt time.Duration, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var ti *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) { ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || serr != nil {
		return 0, false
	}
	if ti.Total_retrans != 0 || ti.Rtt == 0 {
		return 0, false
	}
	return time.Duration(ti.Rtt) * time.Microsecond, true
}
