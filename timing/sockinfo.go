package timing

import "time"

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
	// Unacked counts segments sent and not acknowledged yet (a FIN too).
	Unacked uint32
	// RTT is the kernel's smoothed round-trip time.
	RTT time.Duration
	// BytesSent counts data bytes sent on the socket (retransmissions
	// included), NotSent those written but not sent yet.
	BytesSent uint64
	NotSent   uint32
	// BytesRetrans counts retransmitted data bytes (in BytesSent too).
	BytesRetrans uint64
	// Retransmits counts segments retransmitted over the connection's
	// life, the SYN included.
	Retransmits uint32
}
