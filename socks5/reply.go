package socks5

import (
	"context"
	"errors"
	"net"
	"syscall"

	"github.com/inspectproxy/inspectproxy/stream"
)

// ReplyFor is the reply for a stream the pipeline refused: not allowed
// for the access rules, general failure for a limit, and for an upstream
// that could not be reached the code that says why (refused, network or
// host unreachable, TTL expired for a timeout, host unreachable for DNS).
func ReplyFor(r stream.Refusal) Reply {
	switch r.Reason {
	case stream.Denied:
		return NotAllowed
	case stream.Unreachable:
		var ne net.Error
		switch err := r.Err; {
		case errors.Is(err, syscall.ECONNREFUSED):
			return ConnectionRefused
		case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
			return NetworkUnreachable
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &ne) && ne.Timeout():
			return TTLExpired
		}
		return HostUnreachable
	}
	return GeneralFailure
}
