package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// tunnel is one CONNECT passed through undecrypted. Bytes are forwarded as
// they are read; a copy of the handshake goes to the tracker, and once a
// direction's handshake part is over it becomes a plain io.Copy between
// the two *net.TCPConn (splice on Linux).
type tunnel struct {
	s      *Server
	cc     *clientConn
	log    *zap.Logger
	req    *http.Request
	target string

	client *net.TCPConn
	early  []byte // bytes the client sent with the CONNECT, already buffered
	dial   *timing.Dialed
	dialAt time.Duration
	server *net.TCPConn

	tracker   *tlsinfo.Tracker
	close     timing.Close
	up, down  atomic.Int64
	helloWait atomic.Bool // the client sent nothing within hello_timeout
	aborted   atomic.Bool
	halfClose sync.Once
	hcTimer   atomic.Pointer[time.Timer]
	err       error
	errMu     sync.Mutex
}

func (s *Server) serveTunnel(cc *clientConn, w http.ResponseWriter, r *http.Request) {
	cc.setKind(event.KindTunnel, r.Host)
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		cc.setError(fmt.Sprintf("hijack: %v", err))
		http.Error(w, "inspectproxy: cannot tunnel on this connection", http.StatusInternalServerError)
		return
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		conn.Close()
		cc.setError(fmt.Sprintf("hijack: client connection is %T, not TCP", conn))
		cc.closed() // its event; the HTTP server no longer tracks it
		return
	}
	t := &tunnel{
		s: s, cc: cc, req: r, target: r.Host, client: tc,
		log:     cc.log.With(zap.String("target", r.Host)),
		tracker: tlsinfo.NewTracker(s.cfg.Limits.InspectBuffer),
	}
	// Bytes sent right behind the CONNECT (a ClientHello, with clients that
	// don't wait for the 200) sit in the HTTP server's buffer.
	if n := rw.Reader.Buffered(); n > 0 {
		t.early, _ = rw.Reader.Peek(n)
		t.early = append([]byte(nil), t.early...)
	}
	t.run()
}

func (t *tunnel) run() {
	defer t.finish()
	_ = t.client.SetDeadline(time.Time{}) // the HTTP server's header deadline no longer applies
	if !t.dialUpstream() {
		return
	}
	t.relay()
}

func (t *tunnel) fail(err error) {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	if t.err == nil {
		t.err = err
	}
}

// dialUpstream connects to the target and answers the CONNECT: 200 once
// connected, 502 (or 403 when denied) with the reason otherwise.
func (t *tunnel) dialUpstream() bool {
	t.dialAt = t.cc.since()
	d, err := t.s.dialer.Dial(t.req.Context(), t.target)
	t.dial = d
	if err != nil {
		t.fail(err)
		code := http.StatusBadGateway
		if errors.Is(err, timing.ErrDenied) {
			code = http.StatusForbidden
		}
		t.reply(code, err.Error())
		_ = t.client.Close()
		return false
	}
	t.server = d.Conn
	if err := t.reply(http.StatusOK, ""); err != nil {
		t.fail(fmt.Errorf("proxy: write CONNECT reply: %w", err))
		_ = t.client.Close()
		_ = t.server.Close()
		return false
	}
	return true
}

func (t *tunnel) reply(code int, body string) error {
	proto := "HTTP/1.1"
	if t.req.ProtoMajor == 1 && t.req.ProtoMinor == 0 {
		proto = "HTTP/1.0"
	}
	msg := fmt.Sprintf("%s %d %s\r\n", proto, code, http.StatusText(code))
	if body != "" {
		body = "inspectproxy: " + body + "\n"
		msg += fmt.Sprintf("Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	} else {
		msg += "\r\n"
	}
	_ = t.client.SetWriteDeadline(time.Now().Add(t.s.cfg.Limits.HeaderTimeout))
	_, err := io.WriteString(t.client, msg)
	_ = t.client.SetWriteDeadline(time.Time{})
	return err
}

// relay runs both directions, one on this goroutine, and the timers that
// bound the tunnel.
func (t *tunnel) relay() {
	idle := t.watchIdle()
	defer idle.Stop()
	defer t.s.onCut(t, func() {
		t.close.Timeout("shutdown")
		t.abort()
	})()
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.pipe(tlsinfo.ServerToClient, t.server, t.client, nil, &t.down)
	}()
	t.pipe(tlsinfo.ClientToServer, t.client, t.server, t.early, &t.up)
	<-done
	t.aborted.Store(true) // both directions are over; timers stand down
	_ = t.client.Close()
	_ = t.server.Close()
}

// sides names the ends of a direction.
func sides(dir tlsinfo.Direction) (src, dst string) {
	if dir == tlsinfo.ClientToServer {
		return event.SideClient, event.SideServer
	}
	return event.SideServer, event.SideClient
}

// pipe forwards src to dst: first read by read, feeding the tracker, then,
// when the tracker needs no more, by io.Copy on the raw sockets.
func (t *tunnel) pipe(dir tlsinfo.Direction, src, dst *net.TCPConn, early []byte, count *atomic.Int64) {
	if wrote, err := t.inspect(dir, src, dst, early, count); err != nil {
		t.ended(dir, src, dst, err, wrote)
		return
	}
	n, err := io.Copy(dst, src)
	count.Add(n)
	if err == nil {
		err = io.EOF
	}
	t.ended(dir, src, dst, err, false)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// inspect forwards early, then reads and forwards, while the tracker wants
// bytes. A nil error means the tracker is done and the direction goes on
// uninspected; otherwise err ended the direction, and wrote says it was a
// write error rather than a read error.
func (t *tunnel) inspect(dir tlsinfo.Direction, src, dst *net.TCPConn, early []byte, count *atomic.Int64) (wrote bool, err error) {
	if len(early) > 0 {
		if more, err := t.forward(dir, dst, early, t.cc.since(), count); err != nil || !more {
			return err != nil, err
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	first := dir == tlsinfo.ClientToServer && t.up.Load() == 0
	if first {
		_ = src.SetReadDeadline(time.Now().Add(t.s.cfg.Limits.HelloTimeout))
	}
	for {
		n, rerr := src.Read(buf)
		at := t.cc.since()
		if first {
			first = false
			_ = src.SetReadDeadline(time.Time{})
			if n == 0 && isTimeout(rerr) {
				// Nothing to inspect yet: keep the tunnel, stop waiting.
				t.helloWait.Store(true)
				return false, nil
			}
		}
		if n > 0 {
			if more, err := t.forward(dir, dst, buf[:n], at, count); err != nil || !more {
				return err != nil, err
			}
		}
		if rerr != nil {
			return false, rerr
		}
	}
}

// forward gives p to the tracker, then writes it to dst. Feeding first
// means the peer's answer can never reach the tracker before what it
// answers.
func (t *tunnel) forward(dir tlsinfo.Direction, dst *net.TCPConn, p []byte, at time.Duration, count *atomic.Int64) (more bool, err error) {
	more = t.tracker.Feed(dir, p, at)
	n, err := dst.Write(p)
	count.Add(int64(n))
	return more, err
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// ended handles the end of one direction: a FIN is passed on as a
// half-close (CloseWrite), a reset as a reset, so the client and server
// see the close the other made.
func (t *tunnel) ended(dir tlsinfo.Direction, src, dst *net.TCPConn, err error, writeErr bool) {
	srcSide, dstSide := sides(dir)
	at := t.cc.since()
	if t.aborted.Load() {
		return
	}
	switch {
	case err == io.EOF:
		t.close.FIN(srcSide, at)
		t.tracker.EOF(dir, at)
		_ = dst.CloseWrite()
		t.startHalfCloseTimer()
	case timing.IsReset(err):
		t.close.RST(t.resetSide(err, src, dst, srcSide, dstSide, writeErr))
		t.tracker.EOF(dir, at)
		t.abort()
	default:
		if !errors.Is(err, net.ErrClosed) {
			t.fail(fmt.Errorf("proxy: %s→%s: %w", srcSide, dstSide, err))
		}
		t.tracker.EOF(dir, at)
		t.abort()
	}
}

// resetSide finds which side reset. A read error is the source's, a write
// error the destination's; io.Copy via splice does not say, so the kernel
// is asked which socket is closed.
func (t *tunnel) resetSide(err error, src, dst *net.TCPConn, srcSide, dstSide string, writeErr bool) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "read" && !writeErr {
		return srcSide
	}
	if writeErr || (errors.As(err, &oe) && oe.Op == "write") {
		return dstSide
	}
	if si, ok := timing.Info(src); ok && si.Closed {
		return srcSide
	}
	if di, ok := timing.Info(dst); ok && di.Closed {
		return dstSide
	}
	return srcSide
}

// abort ends both sides at once; the peers see a reset, as the other
// side's peer did, or as a proxy timeout gives.
func (t *tunnel) abort() {
	if t.aborted.Swap(true) {
		return
	}
	_ = timing.Abort(t.client)
	_ = timing.Abort(t.server)
}

// startHalfCloseTimer bounds the time the other direction may stay open
// after the first FIN: a silent peer must not hold the tunnel forever.
func (t *tunnel) startHalfCloseTimer() {
	t.halfClose.Do(func() {
		t.hcTimer.Store(time.AfterFunc(t.s.cfg.Limits.HalfCloseTimeout, func() {
			t.close.Timeout("half_close")
			t.abort()
		}))
	})
}

// watchIdle closes the tunnel when neither side has sent data for
// idle_timeout. It asks the kernel when data last arrived on each socket,
// so the splice path needs no per-read bookkeeping.
func (t *tunnel) watchIdle() *time.Timer {
	d := t.s.cfg.Limits.IdleTimeout
	var tm *time.Timer
	tm = time.AfterFunc(d, func() {
		if t.aborted.Load() {
			return // ended meanwhile: do not re-arm
		}
		ci, ok1 := timing.Info(t.client)
		si, ok2 := timing.Info(t.server)
		if ok1 && ok2 {
			if quiet := min(ci.SinceRecv, si.SinceRecv); quiet < d {
				tm.Reset(d - quiet)
				return
			}
		}
		t.close.Timeout("idle")
		t.abort()
	})
	return tm
}

// finish builds and writes the event.
func (t *tunnel) finish() {
	if tm := t.hcTimer.Load(); tm != nil {
		tm.Stop()
	}
	end := t.cc.since()
	cc := t.cc
	cc.mu.Lock()
	ev := cc.ev
	cc.mu.Unlock()
	ev.End = time.Now().UTC()
	if t.dial != nil {
		// Like every upstream's, the duration runs from the dial's start.
		tcp := tcpEvent(t.dial, t.dialAt, &t.close, t.up.Load(), t.down.Load(), end-t.dialAt)
		ev.TCP = &tcp
	}
	if t.server != nil {
		t.s.inspect.fillTLS(&ev, t.tracker.Info(), t.target, t.helloWait.Load(), t.log)
	}
	t.errMu.Lock()
	if t.err != nil && ev.Error == "" {
		ev.Error = t.err.Error()
	}
	t.errMu.Unlock()
	t.s.emit(&ev, t.log)
	if t.cc.hasSlot {
		t.s.release()
	}
}
