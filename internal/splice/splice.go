// Package splice copies between two TCP sockets with splice(2) and holds a
// pipe only while bytes are flowing.
//
// io.Copy between two *net.TCPConn splices on Linux too, but the runtime
// takes a pipe pair before it waits for the source and keeps it while the
// source is quiet, so an idle proxied connection holds six descriptors
// (two sockets and a pipe pair per direction) instead of two, and the
// runtime's pipe pool is a sync.Pool that closes pipes only at a garbage
// collection. Pool.Copy waits for the source with nothing in hand (parked
// in the netpoller), takes a pipe from a bounded pool when there are bytes
// to move, gives it back as soon as the source has nothing more ready, and
// closes pipes that stay unused. Its errors say which side failed, so a
// proxy needs no guess about who reset.
package splice

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Op is the side of a copy that failed.
type Op uint8

const (
	// Read is reading the source: its reset, its read deadline, its close.
	Read Op = iota + 1
	// Write is writing the destination: its reset (EPIPE, ECONNRESET),
	// its write deadline, its close.
	Write
)

func (o Op) String() string {
	switch o {
	case Read:
		return "read from source"
	case Write:
		return "write to destination"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Error ends a copy that did not end at the source's EOF.
//
// The kernel reports a socket's reset once, to the first read or write on
// it after the RST. When one direction reads the socket the peer reset
// while the other writes to it, one of them gets ECONNRESET and the other
// may get EPIPE, or EOF (a nil error) on the read: to know who reset,
// take an error from either direction as the answer for its socket
// before concluding FIN from an EOF.
type Error struct {
	Op Op
	// Err is the cause with the net and os wrappers taken off: an errno
	// (syscall.ECONNRESET, syscall.EPIPE, ...), os.ErrDeadlineExceeded or
	// net.ErrClosed.
	Err error
	// Unsent is the bytes read from the source that the destination never
	// took (on a Write error only). They are not in Copy's count.
	Unsent int64
}

func (e *Error) Error() string {
	if e.Unsent > 0 {
		return fmt.Sprintf("splice: %s: %v (%d bytes read not sent)", e.Op, e.Err, e.Unsent)
	}
	return fmt.Sprintf("splice: %s: %v", e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// cause takes the *net.OpError and *os.SyscallError off err: the caller
// knows the addresses, and the Op says which call failed.
func cause(err error) error {
	for {
		var oe *net.OpError
		var se *os.SyscallError
		switch {
		case errors.As(err, &oe):
			err = oe.Err
		case errors.As(err, &se):
			err = se.Err
		default:
			return err
		}
	}
}

// Pool defaults.
const (
	DefaultMax         = 128
	DefaultIdle        = 16
	DefaultIdleTimeout = 5 * time.Second
)

// Pool is a bounded set of pipes that Copy borrows while bytes flow. A
// zero Pool is ready to use with the defaults; set the fields before the
// first Copy, and do not copy a Pool after it. Pools exist only on Linux; elsewhere Copy is a
// read/write loop and a Pool holds nothing.
type Pool struct {
	// Max is the most pipes open at once, lent or idle (two descriptors
	// each). A copy that finds them all lent (destinations slower than
	// their sources hold theirs) moves its bytes through a buffer
	// instead. Default DefaultMax (128).
	Max int
	// Idle is the most unused pipes kept open; a pipe given back beyond
	// it is closed. Default DefaultIdle (16).
	Idle int
	// IdleTimeout closes a pipe unused this long. Default
	// DefaultIdleTimeout (5s).
	IdleTimeout time.Duration

	pipes pipes
}

func (p *Pool) max() int {
	if p.Max > 0 {
		return p.Max
	}
	return DefaultMax
}

func (p *Pool) idle() int {
	if p.Idle > 0 {
		return p.Idle
	}
	return DefaultIdle
}

func (p *Pool) idleTimeout() time.Duration {
	if p.IdleTimeout > 0 {
		return p.IdleTimeout
	}
	return DefaultIdleTimeout
}

// Copy copies from src to dst until src's EOF (a nil error, as io.Copy)
// or an error, a *Error naming the side that failed. It returns the bytes
// dst's socket accepted. Between two *net.TCPConn on Linux it splices, and
// between bursts it holds no pipe and no buffer; other readers and writers
// go through a read/write loop. Deadlines set on the connections apply.
// Copy does not close or half-close anything.
func (p *Pool) Copy(dst io.Writer, src io.Reader) (int64, error) {
	return p.CopyProgress(dst, src, Progress{})
}

// Progress lets a caller follow a long copy. Its functions run on the
// copying goroutine and must be quick; either may be nil.
type Progress struct {
	// Moved is called with each run of bytes dst took, as it takes them:
	// when data first flowed, when it last did, how much after a FIN. The
	// runs add up to Copy's result.
	Moved func(n int64)
	// Blocked is called once, the first time dst cannot take more (its
	// reader is slower than src's writer), between kernel sockets only.
	// While the copy waits, src is not read: its peer's FIN may arrive
	// behind unread data, and only a watch on src would see it then.
	Blocked func()
}

// CopyProgress is Copy reporting its progress to pr.
func (p *Pool) CopyProgress(dst io.Writer, src io.Reader, pr Progress) (int64, error) {
	if pr.Moved == nil {
		pr.Moved = func(int64) {}
	}
	d, ok1 := dst.(*net.TCPConn)
	s, ok2 := src.(*net.TCPConn)
	if ok1 && ok2 {
		return p.copyTCP(d, s, pr)
	}
	return copyLoop(dst, src, pr.Moved)
}

const bufSize = 32 << 10

type buffer = [bufSize]byte

var buffers = sync.Pool{New: func() any { return new(buffer) }}

// copyLoop is Copy for anything but two kernel TCP sockets: a read/write
// loop that keeps the side of each error.
func copyLoop(dst io.Writer, src io.Reader, count func(int64)) (written int64, err error) {
	b := buffers.Get().(*buffer)
	defer buffers.Put(b)
	for {
		n, rerr := src.Read(b[:])
		if n > 0 {
			m, werr := dst.Write(b[:n])
			written += int64(m)
			if m > 0 {
				count(int64(m))
			}
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return written, &Error{Op: Write, Err: cause(werr), Unsent: int64(n - m)}
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, &Error{Op: Read, Err: cause(rerr)}
		}
	}
}
