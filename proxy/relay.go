package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/rstwatch"
	"github.com/inspectproxy/inspectproxy/internal/splice"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/timing"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// relay passes a stream through, byte for byte. Each direction is read and
// forwarded while the tracker wants its bytes (fed before they are
// forwarded, so an answer is never parsed before what it answers), then
// copied in bulk (splice(2) between two kernel sockets). A FIN is passed on
// as a FIN and a reset as a reset, so each peer sees the close the other
// made, and the close story goes into the event.
type relay struct {
	client    stream.Conn
	clientTCP *net.TCPConn // the client as a kernel socket, when it is one
	server    *net.TCPConn
	tracker   *tlsinfo.Tracker
	lim       config.Limits
	since     func() time.Duration
	onCut     func(key any, cut func()) (undo func())
	close     *timing.Close
	pipes     *splice.Pool
	// fed, when set, runs after the tracker was given bytes (the live
	// console follows the handshake's progress).
	fed func()

	bytes [2]atomic.Int64 // by direction: up, down
	// unsent is, by direction, what a reset discarded from the socket it
	// was written into: counted as written, it never reached the wire.
	unsent [2]atomic.Int64
	// afterFIN counts bytes written into a side after its FIN arrived:
	// if that side then resets, the cause is data after close. sentAtFIN
	// is what the kernel had sent into it when its FIN arrived, for when
	// the reset is seen before the copy has counted what caused it.
	afterFIN  [2]atomic.Int64 // by side: client, server
	sentAtFIN [2]atomic.Int64 // by side; -1 while unknown
	// finAt is, by side, when a watch saw its FIN arrive while the relay
	// was held up writing to the other side and not reading it; -1 while
	// unseen.
	finAt [2]atomic.Int64
	// eofRead is, by side, that the relay read its FIN: the direction
	// from it is over and nothing more is written toward it. Set before
	// the other's is checked, so of two directions ending together one
	// sees the other's. (The FIN's record is not this: a reset may record
	// the other side's FIN while that direction still writes.)
	eofRead [2]atomic.Bool
	// clientRecv is when the client last sent data, for idle_timeout
	// where the kernel cannot say (a client that is not a kernel socket);
	// kept for such a client only.
	clientRecv atomic.Int64
	helloWait  atomic.Bool // the client sent nothing within hello_timeout
	aborted    atomic.Bool
	closeMu    sync.Mutex // held by whoever closes the sockets
	halfClose  sync.Once
	hcTimer    atomic.Pointer[time.Timer]
	watchMu    sync.Mutex
	unwatch    [2]func() // by side: stops the watch (FIN, then reset) of that socket
	unwatched  bool      // stopWatches ran: no new watch may start

	errMu sync.Mutex
	err   error
}

func newRelay(client stream.Conn, server *net.TCPConn, tr *tlsinfo.Tracker, lim config.Limits,
	since func() time.Duration, onCut func(any, func()) func(), cl *timing.Close, pipes *splice.Pool) *relay {
	r := &relay{client: client, server: server, tracker: tr, lim: lim, since: since, onCut: onCut, close: cl, pipes: pipes}
	for side := range 2 {
		r.sentAtFIN[side].Store(-1)
		r.finAt[side].Store(-1)
	}
	if t, ok := client.(stream.TCP); ok {
		r.clientTCP = t.TCPConn
	}
	return r
}

// sent is what went through a direction on the wire: what was written,
// less what a reset discarded before it was sent.
func (r *relay) sent(dir tlsinfo.Direction) int64 {
	return max(r.bytes[dir].Load()-r.unsent[dir].Load(), 0)
}

// sides of a relay, indexing afterFIN and unwatch.
const (
	clientSide = 0
	serverSide = 1
)

// dirFrom is the direction whose data side sends.
func dirFrom(side int) tlsinfo.Direction {
	if side == clientSide {
		return tlsinfo.ClientToServer
	}
	return tlsinfo.ServerToClient
}

func sideName(s int) string {
	if s == clientSide {
		return event.SideClient
	}
	return event.SideServer
}

// run forwards early (client bytes already read; fed to the tracker unless
// earlyFed) and then both directions until both are over, then closes both
// sockets.
func (r *relay) run(early []byte, earlyFed bool) {
	idle := r.watchIdle()
	defer idle.Stop()
	defer r.onCut(r, func() { r.proxyCut("shutdown", "proxy_shutdown") })()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.pipe(tlsinfo.ServerToClient, nil, false)
	}()
	r.pipe(tlsinfo.ClientToServer, early, earlyFed)
	<-done
	if tm := r.hcTimer.Load(); tm != nil {
		tm.Stop()
	}
	r.settle()
	// Both directions are over; timers stand down. An abort still under
	// way on another goroutine (the reset watcher, a timer) finishes
	// first: it owns the sockets and what it reads from them.
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	if r.aborted.Swap(true) {
		return
	}
	r.stopWatches()
	_ = r.client.Close()
	_ = r.server.Close()
}

func (r *relay) fail(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

// endpoints of a direction: the socket read, the one written, their sides.
type endpoints struct {
	src, dst         net.Conn
	srcTCP, dstTCP   *net.TCPConn
	srcSide, dstSide int
}

func (r *relay) endpoints(dir tlsinfo.Direction) endpoints {
	if dir == tlsinfo.ClientToServer {
		return endpoints{r.client, r.server, r.clientTCP, r.server, clientSide, serverSide}
	}
	return endpoints{r.server, r.client, r.server, r.clientTCP, serverSide, clientSide}
}

// pipe forwards one direction: inspected while the tracker wants bytes,
// then in bulk.
func (r *relay) pipe(dir tlsinfo.Direction, early []byte, earlyFed bool) {
	e := r.endpoints(dir)
	if werr, err := r.inspect(dir, e, early, earlyFed); err != nil {
		r.ended(dir, e, err, werr)
		return
	}
	werr, err := r.bulk(e, dir)
	if err == nil {
		err = io.EOF
	}
	r.ended(dir, e, err, werr)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// inspect forwards early, then reads and forwards while the tracker wants
// bytes. A nil error means the tracker is done and the direction goes on
// in bulk; otherwise err ended the direction, and wrote says it was a
// write error rather than a read error.
func (r *relay) inspect(dir tlsinfo.Direction, e endpoints, early []byte, earlyFed bool) (wrote bool, err error) {
	if len(early) > 0 {
		r.close.Mark(sideName(e.srcSide), timing.HistData)
		if !earlyFed {
			r.tracker.Feed(dir, early, r.since())
		}
		if err := r.write(e, dir, early); err != nil {
			return true, err
		}
	}
	if r.tracker.Done(dir) { // Feed said so too: it wants no more once done
		return false, nil
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	first := dir == tlsinfo.ClientToServer && r.bytes[dir].Load() == 0
	if first {
		_ = e.src.SetReadDeadline(time.Now().Add(r.lim.HelloTimeout))
	}
	for {
		n, rerr := e.src.Read(buf)
		at := r.since()
		if first {
			first = false
			_ = e.src.SetReadDeadline(time.Time{})
			if n == 0 && errors.Is(rerr, os.ErrDeadlineExceeded) {
				// Nothing to inspect: keep the tunnel, stop inspecting
				// both ways, so both directions go on in bulk.
				r.helloWait.Store(true)
				r.tracker.Stop()
				return false, nil
			}
		}
		if n > 0 {
			// The side's data is marked as read, before it is passed on:
			// marked after the write, the answer it draws could be
			// marked first.
			r.close.Mark(sideName(e.srcSide), timing.HistData)
			if r.keepsClientRecv(dir) {
				r.clientRecv.Store(int64(at))
			}
			more := r.tracker.Feed(dir, buf[:n], at)
			if r.fed != nil {
				r.fed()
			}
			if err := r.write(e, dir, buf[:n]); err != nil {
				return true, err
			}
			if !more {
				return false, nil
			}
		}
		if rerr != nil {
			return false, rerr
		}
	}
}

// write forwards p to the direction's destination, counting it.
func (r *relay) write(e endpoints, dir tlsinfo.Direction, p []byte) error {
	n, err := e.dst.Write(p)
	if n > 0 {
		r.moved(e, dir, int64(n))
	}
	return err
}

// bulk copies the rest of a direction: splice between kernel sockets,
// holding a pipe only while bytes flow (internal/splice), a counting copy
// otherwise. wrote says whether err was the destination's.
func (r *relay) bulk(e endpoints, dir tlsinfo.Direction) (wrote bool, err error) {
	// Two kernel sockets splice: pass the *net.TCPConn themselves, not the
	// stream wrapper, or the copy falls back to a buffer held while idle.
	var dst io.Writer = e.dst
	var src io.Reader = e.src
	if e.dstTCP != nil && e.srcTCP != nil {
		dst, src = e.dstTCP, e.srcTCP
	}
	_, err = r.pipes.CopyProgress(dst, src, splice.Progress{
		Moved: func(n int64) { r.moved(e, dir, n) },
		// Held up by a slow reader, the copy no longer reads its source:
		// a FIN arriving there now is dated by a watch, not by the read
		// that reaches it later.
		Blocked: func() { r.watchFIN(e.srcSide, e.srcTCP) },
	})
	var se *splice.Error
	return errors.As(err, &se) && se.Op == splice.Write, err
}

// keepsClientRecv says whether data read in dir updates clientRecv.
func (r *relay) keepsClientRecv(dir tlsinfo.Direction) bool {
	return dir == tlsinfo.ClientToServer && r.clientTCP == nil
}

// moved counts n bytes a direction delivered.
func (r *relay) moved(e endpoints, dir tlsinfo.Direction, n int64) {
	if r.bytes[dir].Load() == 0 {
		r.close.Mark(sideName(e.srcSide), timing.HistData)
	}
	r.bytes[dir].Add(n)
	if r.keepsClientRecv(dir) {
		r.clientRecv.Store(int64(r.since()))
	}
	if r.close.HasFIN(sideName(e.dstSide)) {
		r.afterFIN[e.dstSide].Add(n)
	}
}

// ended handles the end of one direction: a FIN is passed on as a
// half-close, a reset as a reset.
func (r *relay) ended(dir tlsinfo.Direction, e endpoints, err error, writeErr bool) {
	at := r.since()
	if r.aborted.Load() {
		// The proxy is resetting both sides: reads end with ErrClosed;
		// an EOF still read is the peer's own FIN, which came first,
		// unless that peer is the one resetting (its reset was taken by
		// the other direction's write, and the socket reads as ended).
		if err == io.EOF && r.close.RSTBy() != sideName(e.srcSide) {
			r.close.FIN(sideName(e.srcSide), r.finTime(e.srcSide, at))
		}
		return
	}
	src, dst := sideName(e.srcSide), sideName(e.dstSide)
	// The source socket as its peer's FIN left it, read once: for a reset
	// taken for a FIN, then for the bytes sent to it before that FIN.
	var si timing.SockInfo
	siOK := false
	if err == io.EOF && e.srcTCP != nil && !r.eofRead[e.dstSide].Load() {
		// The kernel reports a reset once: if the other direction's write
		// took it, this read sees a plain EOF. A socket whose peer sent
		// FIN is in CLOSE_WAIT; one that was reset is closed, which a
		// socket also is once both FINs passed and the proxy's was first
		// (Linux hands TIME_WAIT to a socket of its own).
		// Only while the other direction still writes into this socket
		// can it have taken the reset: once it is over (the proxy's FIN
		// went first), an EOF is a FIN.
		if si, siOK = timing.Info(e.srcTCP); siOK && si.Closed && !si.PeerFIN {
			r.peerReset(e.srcSide, at)
			r.tracker.Reset(dir, at)
			return
		}
	}
	switch {
	case err == io.EOF:
		r.eofRead[e.srcSide].Store(true)
		at = r.finTime(e.srcSide, at)
		first := r.close.FIN(src, at)
		r.tracker.EOF(dir, at)
		if first && r.fed != nil {
			r.fed()
		}
		if r.eofRead[e.dstSide].Load() {
			// Both ways are over; the relay closes both sockets.
			r.stopWatches()
			_ = closeWrite(e.dst)
			return
		}
		// The source has closed its sending side; the other direction
		// still writes into it. It may reset later (it closed the whole
		// socket and data reached it, or it aborts), which no read would
		// see: watch for it, to pass it on.
		if e.srcTCP != nil {
			if siOK { // read above: this branch runs only after that read
				r.sentAtFIN[e.srcSide].Store(int64(si.BytesSent - si.BytesRetrans))
			}
			r.watchReset(e.srcSide, e.srcTCP)
		}
		_ = closeWrite(e.dst)
		r.startHalfCloseTimer()
	case timing.IsReset(err):
		side := r.resetSide(err, e, writeErr)
		r.peerReset(side, at)
		r.tracker.Reset(dir, at)
	default:
		if !errors.Is(err, net.ErrClosed) {
			r.fail(fmt.Errorf("proxy: %s→%s: %w", src, dst, err))
		}
		r.tracker.EOF(dir, at)
		r.abort()
	}
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// resetSide finds which side reset. A read error is the source's, a write
// error the destination's; io.Copy via splice does not say, so the kernel
// is asked which socket is closed.
func (r *relay) resetSide(err error, e endpoints, writeErr bool) int {
	var oe *net.OpError
	var se *splice.Error
	switch {
	case errors.As(err, &se):
		if se.Op == splice.Read {
			return e.srcSide
		}
		return e.dstSide
	case errors.As(err, &oe) && oe.Op == "read" && !writeErr:
		return e.srcSide
	case writeErr || errors.As(err, &oe) && oe.Op == "write":
		return e.dstSide
	}
	if e.srcTCP != nil {
		if si, ok := timing.Info(e.srcTCP); ok && si.Closed {
			return e.srcSide
		}
	}
	if e.dstTCP != nil {
		if di, ok := timing.Info(e.dstTCP); ok && di.Closed {
			return e.dstSide
		}
	}
	return e.srcSide
}

// peerReset records that side reset and passes the reset on to the other
// side, as the peer of a direct connection would have seen it.
func (r *relay) peerReset(side int, at time.Duration) {
	cause := "abort"
	if r.dataAfterFIN(side) {
		cause = "data_after_close"
	}
	// The other side's FIN may be in its socket already, unread behind
	// data the proxy is still passing on (late to wake, or held by a
	// client that does not read): it arrived before the reset was seen,
	// so it is recorded first, as the wire has it.
	other := 1 - side
	if c := r.tcpConn(other); c != nil && !r.close.HasFIN(sideName(other)) {
		if si, ok := timing.Info(c); ok && r.finArrived(other, si) {
			r.close.FIN(sideName(other), r.finTime(other, at))
		}
	}
	r.close.RST(sideName(side), cause, at)
	r.abort()
}

// finArrived reports whether side's socket, as si shows it, holds its
// peer's FIN. After the proxy's own FIN into it, the peer's FIN leaves
// the socket closed rather than in CLOSE_WAIT (Linux hands TIME_WAIT to a
// socket of its own); a reset leaves it closed too, so not if side is the
// one resetting.
func (r *relay) finArrived(side int, si timing.SockInfo) bool {
	return si.PeerFIN || si.Closed && r.eofRead[1-side].Load() && r.close.RSTBy() != sideName(side)
}

// tcpConn is side's kernel socket, or nil for a client that is not one.
func (r *relay) tcpConn(side int) *net.TCPConn {
	if side == clientSide {
		return r.clientTCP
	}
	return r.server
}

// dataAfterFIN reports whether data reached side after its FIN: the
// kernel's count of what it sent there since, for a kernel socket (what
// the copy counts in user space may be counted after the reset it caused
// is seen), else the copy's count.
func (r *relay) dataAfterFIN(side int) bool {
	c := r.tcpConn(side)
	base := r.sentAtFIN[side].Load()
	if c == nil || base < 0 {
		return r.afterFIN[side].Load() > 0
	}
	si, ok := timing.Info(c)
	return ok && int64(si.BytesSent-si.BytesRetrans) > base
}

// watchReset watches a socket whose peer sent FIN for the reset its
// kernel sends if data arrives after it closed.
func (r *relay) watchReset(side int, c *net.TCPConn) {
	// Registered under the lock: once the other direction has stopped the
	// watches to shut this socket down, a late watch would take that
	// orderly shutdown for a reset.
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if r.unwatched {
		return
	}
	if stop := r.unwatch[side]; stop != nil { // the FIN's watch, spent
		stop()
		r.unwatch[side] = nil
	}
	stop, ok := rstwatch.Watch(c, func() {
		if r.aborted.Load() {
			return
		}
		// The watch stops before the relay shuts down this socket's
		// sending side, so a hang-up here can only be a reset.
		at := r.since()
		r.peerReset(side, at)
		r.tracker.Reset(dirFrom(side), at)
	})
	if ok {
		r.unwatch[side] = stop
	}
}

// watchFIN watches side's socket, which the relay is not reading while
// it waits to write to the other side, for its peer's FIN (or reset), to
// date it when it arrives.
func (r *relay) watchFIN(side int, c *net.TCPConn) {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if r.unwatched || r.unwatch[side] != nil {
		return
	}
	if stop, ok := rstwatch.WatchFIN(c, func() { r.finAt[side].CompareAndSwap(-1, int64(r.since())) }); ok {
		r.unwatch[side] = stop
	}
}

// finTime is when side's FIN was seen: at, when the relay read it, or
// earlier if a watch saw it arrive while the relay was not reading.
func (r *relay) finTime(side int, at time.Duration) time.Duration {
	if f := time.Duration(r.finAt[side].Load()); f >= 0 && f < at {
		return f
	}
	return at
}

func (r *relay) stopWatches() {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	r.unwatched = true
	for i, stop := range r.unwatch {
		if stop != nil {
			stop()
			r.unwatch[i] = nil
		}
	}
}

// settle runs when both directions are over. A side that was sent data
// after its FIN may still answer it with a reset: wait for its kernel to
// acknowledge everything (or reset), for about two round trips, so the
// event and the other peer learn of it as on a direct connection. Then a
// reset that arrived with nobody reading is read from the socket.
func (r *relay) settle() {
	if r.aborted.Load() {
		return
	}
	for side, c := range [2]*net.TCPConn{r.clientTCP, r.server} {
		if c == nil || r.afterFIN[side].Load() == 0 {
			continue
		}
		si, ok := timing.Info(c)
		if !ok {
			continue
		}
		deadline := time.Now().Add(min(2*si.RTT+10*time.Millisecond, time.Second))
		var err error
		for err == nil && si.Unacked > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			if si, ok = timing.Info(c); !ok {
				break
			}
			err = timing.SocketError(c)
		}
		// A reset leaves its error pending on the socket (ECONNRESET, or
		// EPIPE in CLOSE_WAIT); an orderly close leaves none.
		if err != nil || timing.SocketError(c) != nil {
			r.peerReset(side, r.since())
			return
		}
	}
}

// abort ends both sides at once: the peers see a reset.
func (r *relay) abort() {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	if r.aborted.Swap(true) {
		return
	}
	r.stopWatches()
	at := r.since()
	for side := range 2 {
		r.reset(side, at)
	}
}

// reset closes one side so that its peer sees a reset, reading from the
// kernel first what the reset is about to discard, so the event keeps
// what happened on the wire: a FIN that arrived on a side nobody was
// reading any more, and data written into the socket but never sent. The
// reading is the last thing before the close: on loopback what is queued
// leaves within microseconds once the peer's window opens.
func (r *relay) reset(side int, at time.Duration) {
	c := r.tcpConn(side)
	if c == nil { // a client that is not a kernel socket
		_ = r.client.Abort()
		return
	}
	_ = c.SetLinger(0)
	if si, ok := timing.Info(c); ok {
		resetting := r.close.RSTBy() == sideName(side)
		if !r.close.HasFIN(sideName(side)) && (r.finArrived(side, si) || !resetting && timing.PeerClosed(c)) {
			r.close.FIN(sideName(side), r.finTime(side, at))
		}
		// Data written into side's socket flows in the direction toward it.
		r.unsent[dirFrom(1-side)].Store(int64(si.NotSent))
	}
	_ = c.Close()
}

// proxyCut is the proxy ending the stream itself (a timeout, shutdown).
func (r *relay) proxyCut(timeout, cause string) {
	if r.aborted.Load() {
		return
	}
	r.close.Timeout(timeout)
	r.close.RST(event.SideProxy, cause, r.since())
	r.tracker.Cut(r.since())
	r.abort()
}

// startHalfCloseTimer bounds the time the other direction may stay open
// after the first FIN: a silent peer must not hold the stream forever.
func (r *relay) startHalfCloseTimer() {
	r.halfClose.Do(func() {
		r.hcTimer.Store(time.AfterFunc(r.lim.HalfCloseTimeout, func() {
			r.proxyCut("half_close", "proxy_half_close_timeout")
		}))
	})
}

// watchIdle ends the stream when neither side has sent data for
// idle_timeout. It asks the kernel when data last arrived on each socket,
// so the splice path needs no per-read bookkeeping.
func (r *relay) watchIdle() *time.Timer {
	d := r.lim.IdleTimeout
	var tm *time.Timer
	tm = time.AfterFunc(d, func() {
		if r.aborted.Load() {
			return // ended meanwhile: do not re-arm
		}
		if quiet, ok := r.quiet(); ok && quiet < d {
			tm.Reset(d - quiet)
			return
		}
		r.proxyCut("idle", "proxy_idle_timeout")
	})
	return tm
}

// quiet is how long no data has arrived from either side.
func (r *relay) quiet() (time.Duration, bool) {
	si, ok := timing.Info(r.server)
	if !ok {
		return 0, false
	}
	q := si.SinceRecv
	if r.clientTCP != nil {
		ci, ok := timing.Info(r.clientTCP)
		if !ok {
			return 0, false
		}
		return min(q, ci.SinceRecv), true
	}
	last := time.Duration(r.clientRecv.Load())
	return min(q, r.since()-last), true
}
