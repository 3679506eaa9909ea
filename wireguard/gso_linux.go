package wireguard

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpGSO reports whether the kernel segments UDP for c (UDP_SEGMENT,
// Linux 4.18): one sendmsg then carries up to 64 datagrams.
func udpGSO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return false
	}
	return serr == nil
}

// appendGSO appends a UDP_SEGMENT control message with the segment size.
func appendGSO(b []byte, size uint16) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[start+unix.CmsgLen(0):], size)
	return b
}

// gsoRefused is the error of a device that cannot segment (no transmit
// checksum offload): send without it from then on.
func gsoRefused(err error) bool {
	var serr *os.SyscallError
	return errors.As(err, &serr) && serr.Err == unix.EIO
}
