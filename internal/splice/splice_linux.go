package splice

import (
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// pipeSize is each pipe's capacity, as the runtime sets its own: one
	// splice(2) then moves up to what the socket has queued, up to 1 MiB
	// (the default /proc/sys/fs/pipe-max-size). Pipe pages are taken
	// from the socket's buffers, not allocated up front.
	pipeSize = 1 << 20
	// spliceNonblock makes the pipe side of splice(2) non-blocking; the
	// sockets are non-blocking already.
	spliceNonblock = unix.SPLICE_F_NONBLOCK
)

// pipes is a Pool's state.
type pipes struct {
	mu      sync.Mutex
	open    int     // pipes open: lent and free
	free    []*pipe // unused, oldest first
	sweeper *time.Timer
	armed   bool          // sweeper is due to run
	timeout time.Duration // the Pool's IdleTimeout when sweeper was armed
}

type pipe struct {
	r, w  int
	since time.Time // given back to the pool at
}

func newPipe() (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	// A smaller pipe still works, with more calls.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

func (pp *pipe) close() {
	_ = unix.Close(pp.r)
	_ = unix.Close(pp.w)
}

// MaxFDs is the most file descriptors the pool holds at once, to budget
// beside two per proxied connection.
func (p *Pool) MaxFDs() int { return 2 * p.max() }

// get lends an empty pipe: an idle one, or a new one while fewer than max
// are open. nil means none is to be had (at max, or out of descriptors).
func (ps *pipes) get(max int) *pipe {
	ps.mu.Lock()
	if n := len(ps.free); n > 0 {
		pp := ps.free[n-1]
		ps.free[n-1] = nil
		ps.free = ps.free[:n-1]
		ps.mu.Unlock()
		return pp
	}
	if ps.open >= max {
		ps.mu.Unlock()
		return nil
	}
	ps.open++
	ps.mu.Unlock()
	pp, err := newPipe()
	if err != nil {
		ps.mu.Lock()
		ps.open--
		ps.mu.Unlock()
		return nil
	}
	return pp
}

// put takes back an empty pipe. It is closed at once if idle pipes are
// idle already, or later by sweep when it stays unused for timeout.
func (ps *pipes) put(pp *pipe, idle int, timeout time.Duration) {
	ps.mu.Lock()
	if len(ps.free) >= idle {
		ps.open--
		ps.mu.Unlock()
		pp.close()
		return
	}
	pp.since = time.Now()
	ps.free = append(ps.free, pp)
	if !ps.armed {
		ps.armed = true
		ps.timeout = timeout
		if ps.sweeper == nil {
			ps.sweeper = time.AfterFunc(timeout, ps.sweep)
		} else {
			ps.sweeper.Reset(timeout)
		}
	}
	ps.mu.Unlock()
}

// discard closes a lent pipe that still holds bytes nobody will read.
func (ps *pipes) discard(pp *pipe) {
	ps.mu.Lock()
	ps.open--
	ps.mu.Unlock()
	pp.close()
}

// sweep closes the pipes unused for the timeout (the oldest come first)
// and runs again when the next one is due.
func (ps *pipes) sweep() {
	now := time.Now()
	ps.mu.Lock()
	i := 0
	for i < len(ps.free) && now.Sub(ps.free[i].since) >= ps.timeout {
		i++
	}
	old := append([]*pipe(nil), ps.free[:i]...)
	ps.free = append(ps.free[:0], ps.free[i:]...)
	clear(ps.free[len(ps.free):cap(ps.free)])
	ps.open -= i
	if len(ps.free) > 0 {
		ps.sweeper.Reset(ps.timeout - now.Sub(ps.free[0].since))
	} else {
		ps.armed = false
	}
	ps.mu.Unlock()
	for _, pp := range old {
		pp.close()
	}
}

// copyTCP runs a copier; if the sockets have no raw descriptors (which a
// *net.TCPConn always has) it says which one.
func (p *Pool) copyTCP(dst, src *net.TCPConn, pr Progress) (int64, error) {
	rs, err := src.SyscallConn()
	if err != nil {
		return 0, &Error{Op: Read, Err: cause(err)}
	}
	rd, err := dst.SyscallConn()
	if err != nil {
		return 0, &Error{Op: Write, Err: cause(err)}
	}
	c := &copier{pool: p, src: rs, dst: rd, count: pr.Moved, blocked: pr.Blocked}
	c.onReadable, c.onWritable = c.fill, c.drain // one closure each, not one per burst
	defer c.release()
	return c.run()
}

// copier is one Copy between kernel sockets. It holds a pipe, or a buffer
// when no pipe is to be had, only from the moment the source has bytes
// until the source has no more ready and the destination took them all.
type copier struct {
	pool     *Pool
	src, dst syscall.RawConn
	count    func(int64)
	blocked  func() // nil once called

	pipe     *pipe
	buf      *buffer
	off, n   int // bytes held: in the pipe, or buf[off:off+n]
	written  int64
	noSplice bool // splice(2) refused these sockets: buffers only

	eof        bool
	err        error // the errno of the last fill or drain
	onReadable func(fd uintptr) bool
	onWritable func(fd uintptr) bool
}

func (c *copier) run() (int64, error) {
	for {
		c.err = nil
		if err := c.src.Read(c.onReadable); err != nil {
			return c.written, &Error{Op: Read, Err: cause(err)}
		}
		if c.err != nil {
			return c.written, &Error{Op: Read, Err: c.err}
		}
		if c.eof {
			return c.written, nil
		}
		if err := c.dst.Write(c.onWritable); err != nil {
			return c.written, &Error{Op: Write, Err: cause(err), Unsent: int64(c.n)}
		}
		if c.err != nil {
			return c.written, &Error{Op: Write, Err: c.err, Unsent: int64(c.n)}
		}
	}
}

// fill reads what the source has ready into a pipe or a buffer, taken
// now. When there is nothing it lets go of them and asks to wait (false).
func (c *copier) fill(fd uintptr) bool {
	for {
		var n int
		var err error
		if c.pipe == nil && c.buf == nil && !c.noSplice {
			c.pipe = c.pool.pipes.get(c.pool.max())
		}
		if c.pipe != nil {
			var n64 int64
			n64, err = unix.Splice(int(fd), nil, c.pipe.w, nil, pipeSize, spliceNonblock)
			n = int(n64)
			if err == unix.EINVAL || err == unix.ENOSYS {
				// No splice for these sockets (the call moved nothing).
				c.noSplice = true
				c.release()
				continue
			}
		} else {
			if c.buf == nil {
				c.buf = buffers.Get().(*buffer)
			}
			n, err = unix.Read(int(fd), c.buf[:])
		}
		switch err {
		case nil:
			c.off, c.n, c.eof = 0, n, n == 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			c.release()
			return false
		}
		c.err = err
		return true
	}
}

// drain writes all that fill read to the destination; false asks to wait
// until it can take more.
func (c *copier) drain(fd uintptr) bool {
	for c.n > 0 {
		var m int
		var err error
		if c.pipe != nil {
			var m64 int64
			m64, err = unix.Splice(c.pipe.r, nil, int(fd), nil, c.n, spliceNonblock)
			m = int(m64)
		} else {
			m, err = unix.Write(int(fd), c.buf[c.off:c.off+c.n])
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if c.blocked != nil {
				c.blocked()
				c.blocked = nil
			}
			return false
		case err != nil:
			c.err = err
			return true
		case m <= 0:
			c.err = io.ErrNoProgress // the pipe is not empty, so splice(2) returning 0 is a kernel bug
			return true
		}
		c.off += m
		c.n -= m
		c.written += int64(m)
		c.count(int64(m))
	}
	return true
}

// release gives back the pipe and buffer; a pipe that still holds bytes
// (the destination failed) is closed.
func (c *copier) release() {
	if c.pipe != nil {
		if c.n > 0 {
			c.pool.pipes.discard(c.pipe)
		} else {
			c.pool.pipes.put(c.pipe, c.pool.idle(), c.pool.idleTimeout())
		}
		c.pipe = nil
	}
	if c.buf != nil {
		buffers.Put(c.buf)
		c.buf = nil
	}
}
