// Package testnet serves listeners in tests: one accept loop, each
// connection in its own goroutine, and at cleanup the listener and every
// open connection closed and every handler waited for, so that no
// goroutine outlives the test (goleak).
package testnet

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/inspectproxy/inspectproxy/internal/loopback"
	"golang.org/x/sys/unix"
)

// Serve accepts on ln until the test ends and runs handle for each
// connection; nil handle closes each connection at once. Serve closes
// the connections handle leaves open.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if handle == nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Listen listens on addr and serves it with handle until the test ends.
func Listen(t testing.TB, addr string, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, handle)
	return ln
}

// Pair returns a connected TCP pair on loopback, the dialled end and the
// accepted end, both closed when the test ends.
func Pair(t testing.TB) (dialled, accepted *net.TCPConn) {
	t.Helper()
	a, b, err := loopback.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// FreeAddr is a loopback address nothing listens on once it returns: a
// port the kernel just handed out and that was released at once.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// OpenFDs counts this process's open file descriptors (Linux: /proc).
func OpenFDs(t testing.TB) int {
	t.Helper()
	return countFDs(t, func(int, string) bool { return true })
}

// PipeFDs counts this process's descriptors that are pipes, as ls -l
// /proc/self/fd shows them (pipe:[inode]).
func PipeFDs(t testing.TB) int {
	t.Helper()
	return countFDs(t, isPipe)
}

func isPipe(_ int, link string) bool { return strings.HasPrefix(link, "pipe:[") }

// FullPipeFDs counts this process's pipe descriptors with bytes queued in
// them (FIONREAD): a splice in progress, whatever idle pipes other tests'
// relays still hold or release meanwhile. Both ends of a pipe count.
func FullPipeFDs(t testing.TB) int {
	t.Helper()
	return countFDs(t, func(fd int, link string) bool {
		if !isPipe(fd, link) {
			return false
		}
		q, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
		return err == nil && q > 0
	})
}

func countFDs(t testing.TB, match func(fd int, link string) bool) int {
	t.Helper()
	const dir = "/proc/self/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && match(fd, l) {
			n++
		}
	}
	return n
}
