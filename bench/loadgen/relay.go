package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/inspectproxy/inspectproxy/internal/splice"
)

// ---- relay ----

// cmdRelay is a bare CONNECT proxy: no inspection, no events, only the
// byte relay, so the benchmark can hold internal/splice's Copy against
// io.Copy (the runtime's splice) with nothing else in the process.
func cmdRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	mode := fs.String("copy", "splice", "splice: internal/splice Pool.Copy; io: io.Copy")
	maxPipes := fs.Int("max-pipes", splice.DefaultMax, "splice: the pool's Max")
	_ = fs.Parse(args)
	if !isLoopback(*listen) {
		return fmt.Errorf("-listen %s is not a loopback address", *listen)
	}
	var cp func(dst, src *net.TCPConn) (int64, error)
	switch *mode {
	case "splice":
		pool := &splice.Pool{Max: *maxPipes}
		cp = func(dst, src *net.TCPConn) (int64, error) { return pool.Copy(dst, src) }
	case "io":
		cp = func(dst, src *net.TCPConn) (int64, error) { return io.Copy(dst, src) }
	default:
		return fmt.Errorf("-copy %q: want splice or io", *mode)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "relay (%s) listening on %s\n", *mode, ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		<-sig
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			// Out of descriptors (io.Copy's pipes): the client waits in
			// the backlog, as with net/http.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serveRelay(c.(*net.TCPConn), cp)
	}
}

// serveRelay answers one CONNECT to a loopback target and relays until
// both directions end: a FIN is passed on with CloseWrite, an error
// resets both sides.
func serveRelay(c *net.TCPConn, cp func(dst, src *net.TCPConn) (int64, error)) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReaderSize(c, 1024)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect || !isLoopback(req.Host) {
		_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")
		return
	}
	d, err := net.DialTimeout("tcp", req.Host, 10*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
		return
	}
	up := d.(*net.TCPConn)
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		relayOne(up, c, cp)
	}()
	relayOne(c, up, cp)
	<-done
}

func relayOne(dst, src *net.TCPConn, cp func(dst, src *net.TCPConn) (int64, error)) {
	if _, err := cp(dst, src); err != nil {
		_ = src.SetLinger(0)
		_ = dst.SetLinger(0)
		_ = src.Close()
		_ = dst.Close()
		return
	}
	_ = dst.CloseWrite()
}
