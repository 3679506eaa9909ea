package rstwatch

import (
	"errors"

	"golang.org/x/sys/unix"
)

type sysWatcher struct{ epfd int }

func newWatcher() (*Watcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	w := &Watcher{regs: make(map[uint64]func()), sys: sysWatcher{epfd: epfd}}
	go w.loop()
	return w, nil
}

// add asks for EPOLLHUP and EPOLLERR (both are always reported), and
// EPOLLRDHUP for a FIN; one-shot, so a socket fires at most once.
func (s sysWatcher) add(fd int, id uint64, fin bool) error {
	ev := unix.EpollEvent{Events: unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLONESHOT}
	if fin {
		ev.Events |= unix.EPOLLRDHUP
	}
	putID(&ev, id)
	return unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

func (s sysWatcher) del(fd int) { _ = unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil) }

// loop is the process's one watcher goroutine; it blocks in epoll_wait on
// a thread of its own.
func (w *Watcher) loop() {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.sys.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for i := range events[:n] {
			w.fire(getID(&events[i]))
		}
	}
}

// The event's 64 data bits carry the registration id, not the fd.
func putID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func getID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
