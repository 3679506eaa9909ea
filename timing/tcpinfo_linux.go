package timing

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

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
		Closed:       ti.State == unix.BPF_TCP_CLOSE,
		PeerFIN:      ti.State == unix.BPF_TCP_CLOSE_WAIT || ti.State == unix.BPF_TCP_LAST_ACK || ti.State == unix.BPF_TCP_CLOSING || ti.State == unix.BPF_TCP_TIME_WAIT,
		SinceRecv:    time.Duration(ti.Last_data_recv) * time.Millisecond,
		Unacked:      ti.Unacked,
		RTT:          time.Duration(ti.Rtt) * time.Microsecond,
		BytesSent:    ti.Bytes_sent,
		BytesRetrans: ti.Bytes_retrans,
		NotSent:      ti.Notsent_bytes,
		Retransmits:  ti.Total_retrans,
	}, true
}

// SocketError returns the error pending on c (SO_ERROR), such as the
// ECONNRESET of a reset nobody has read yet, and clears it.
func SocketError(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var soerr int
	var gerr error
	if err := rc.Control(func(fd uintptr) { soerr, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) }); err != nil {
		return err
	}
	if gerr != nil {
		return gerr
	}
	if soerr != 0 {
		return unix.Errno(soerr)
	}
	return nil
}

// PeerClosed reports whether the peer's FIN is waiting to be read on c
// with no data before it: a non-blocking MSG_PEEK read, which also lets
// the kernel process segments queued while another goroutine held the
// socket (a FIN that TCP_INFO would not show yet).
func PeerClosed(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, rerr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	}); err != nil {
		return false
	}
	return rerr == nil && n == 0
}
