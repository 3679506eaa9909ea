package wireguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testnet"
)

// TestSoak makes 2,000 connections through the tunnel, ending them at
// random as apps and servers do (FIN either side first, a reset either
// side, an abort mid-transfer): each gets exactly one event, and the
// goroutines and file descriptors come back to where they were.
func TestSoak(t *testing.T) {
	const conns, parallel = 2000, 16
	env := testServer(t, nil)
	c := newClient(t, env.config(t, "phone"))
	ln := listen(t, 1, 0)
	serve(ln, func(c net.Conn) {
		defer c.Close()
		var mode [1]byte
		if _, err := io.ReadFull(c, mode[:]); err != nil {
			return
		}
		switch mode[0] {
		case 's': // the server resets
			_ = c.(*net.TCPConn).SetLinger(0)
		case 'f': // the server closes first after some data
			_, _ = c.Write(make([]byte, 4096))
		default: // echo until the client is done; not spliced, so
			// that no pipe of the runtime's splice pool counts as a leak
			_, _ = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		}
	})
	addr := ln.Addr().String()
	// Warm up with each way of ending, so that what lives as long as the
	// process (pools, timers, the proxy's reset watcher) is in the baseline.
	for mode := range soakModes {
		if err := soakOne(c, addr, mode, mode); err != nil {
			t.Fatal(err)
		}
	}
	env.events.waitCount(t, soakModes)
	baseG, baseFD := runtime.NumGoroutine(), testnet.OpenFDs(t)
	before := env.events.count()

	var wg sync.WaitGroup
	var failed, refused atomic.Int64
	sem := make(chan struct{}, parallel)
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := soakOne(c, addr, i, rand.IntN(soakModes))
			switch {
			case errors.Is(err, syscall.ECONNREFUSED) || err != nil && strings.Contains(err.Error(), "connection was refused"):
				refused.Add(1)
				t.Log(err)
			case err != nil:
				failed.Add(1)
				t.Log(err)
			}
		}()
	}
	wg.Wait()
	// A device's connect does not stall: gVisor would drop a SYN reusing
	// the ports of a connection in TIME-WAIT, for up to a minute.
	if n := failed.Load(); n > 0 {
		t.Errorf("%d connections could not be made within %v", n, soakDialTimeout)
	}
	// Under heavy load about one SYN in 2,000 is answered with a reset by
	// the userspace stack itself, before any flow reaches the proxy (so
	// with no event): the test client picks its ports at random, and we
	// suspect the 4-tuple of a flow the stack has not finished cleaning
	// up. An app retries; the test tolerates 0.1 % and counts events
	// for the connections that were made.
	if n := refused.Load(); n > conns/1000 {
		t.Errorf("%d of %d connects refused by the stack", n, conns)
	}
	made := int(conns - refused.Load())
	env.events.waitCount(t, before+made)
	time.Sleep(100 * time.Millisecond) // a second event of one connection would be there now
	if got := env.events.count() - before; got != made {
		t.Fatalf("%d events for %d connections", got, made)
	}
	ids := map[string]bool{}
	env.events.mu.Lock()
	for _, e := range env.events.events[before:] {
		if e.Kind != event.KindTunnel || ids[e.ID] {
			t.Errorf("event %s kind %s (duplicate: %v)", e.ID, e.Kind, ids[e.ID])
		}
		ids[e.ID] = true
	}
	env.events.mu.Unlock()
	// Flows have ended; what is left settles within moments.
	var g, fd int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if g, fd = runtime.NumGoroutine(), testnet.OpenFDs(t); g <= baseG+2 && fd <= baseFD {
			break
		}
	}
	if g > baseG+2 || fd > baseFD {
		t.Errorf("after the soak: %d goroutines (baseline %d), %d fds (baseline %d)", g, baseG, fd, baseFD)
	}
}

const soakDialTimeout = 15 * time.Second

// soakModes is how many ways soakOne ends a connection.
const soakModes = 5

// soakOne makes connection i and ends it the mode-th way.
func soakOne(c *client, addr string, i, mode int) error {
	ctx, cancel := context.WithTimeout(context.Background(), soakDialTimeout)
	defer cancel()
	nc, err := c.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connection %d: %w", i, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	switch mode {
	case 0: // the client closes first
		_, _ = nc.Write([]byte("e" + "hello"))
		_ = nc.(interface{ CloseWrite() error }).CloseWrite()
		_, _ = io.ReadAll(nc)
	case 1: // the server resets
		_, _ = nc.Write([]byte("s"))
		_, _ = io.ReadAll(nc)
	case 2: // the server closes first
		_, _ = nc.Write([]byte("f"))
		_, _ = io.ReadAll(nc)
	case 3: // the client resets: it closes with data unread
		_, _ = nc.Write([]byte("f"))
		_, _ = nc.Read(make([]byte, 1))
		time.Sleep(time.Duration(i%5) * time.Millisecond)
	case 4: // the client gives up before sending anything
	}
	return nil
}
