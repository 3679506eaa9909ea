// Package rstwatch tells when a TCP socket is reset while nobody reads it,
// and when its peer's FIN arrives while the reader is held up elsewhere.
//
// A relay stops reading a socket once its peer has sent FIN, but it keeps
// writing the other direction's data into it. If the peer closed its
// socket (rather than only shutting down its sending side), the peer's
// kernel answers that data with an RST, which no read will report: the
// relay would never learn of it, pass it on, or record it. One epoll
// instance, on one goroutine for the whole process, watches such sockets
// for EPOLLHUP/EPOLLERR; Go's own poller cannot, because a socket whose
// peer sent FIN is always readable.
//
// The same kernel flag answers a second question. A relay blocked writing
// to a slow reader does not read the other socket, so a FIN that arrived
// behind unread data would be dated when the relay reached it, seconds
// later on a slow phone. EPOLLRDHUP is raised when the FIN arrives,
// whatever is queued before it.
package rstwatch

import (
	"net"
	"sync"
)

// Watcher watches sockets for a reset. The zero value is not usable; use
// Watch, which shares one Watcher per process.
type Watcher struct {
	mu   sync.Mutex
	regs map[uint64]func()
	next uint64
	sys  sysWatcher
}

var (
	defaultOnce sync.Once
	defaultW    *Watcher
	defaultErr  error
)

// Watch calls fn once, on the watcher's goroutine, if c is reset (or
// fully shut down) before stop is called. fn must not block. Call stop
// before closing c or shutting down its sending side. ok is false where
// the platform cannot watch (then fn is never called).
func Watch(c *net.TCPConn, fn func()) (stop func(), ok bool) {
	return watchDefault(c, false, fn)
}

// WatchFIN calls fn once, on the watcher's goroutine, when c's peer has
// sent FIN (or reset), even while data before the FIN is still unread;
// at once if that has already happened. Its stop, like Watch's, must be
// called before c is watched again or closed.
func WatchFIN(c *net.TCPConn, fn func()) (stop func(), ok bool) {
	return watchDefault(c, true, fn)
}

func watchDefault(c *net.TCPConn, fin bool, fn func()) (stop func(), ok bool) {
	defaultOnce.Do(func() { defaultW, defaultErr = newWatcher() })
	if defaultErr != nil {
		return func() {}, false
	}
	return defaultW.watch(c, fin, fn)
}

func (w *Watcher) watch(c *net.TCPConn, fin bool, fn func()) (stop func(), ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return func() {}, false
	}
	w.mu.Lock()
	w.next++
	id := w.next
	w.regs[id] = fn
	w.mu.Unlock()
	var aerr error
	if err := rc.Control(func(fd uintptr) { aerr = w.sys.add(int(fd), id, fin) }); err != nil || aerr != nil {
		w.forget(id)
		return func() {}, false
	}
	return func() {
		// The fd is only used while Control holds it, so a closed and
		// reused descriptor number is never touched; an event already
		// queued for id finds no registration and is dropped.
		_ = rc.Control(func(fd uintptr) { w.sys.del(int(fd)) })
		w.forget(id)
	}, true
}

func (w *Watcher) forget(id uint64) (fn func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn = w.regs[id]
	delete(w.regs, id)
	return fn
}

// fire runs id's callback once.
func (w *Watcher) fire(id uint64) {
	if fn := w.forget(id); fn != nil {
		fn()
	}
}
