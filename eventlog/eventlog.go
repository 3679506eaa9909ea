// Package eventlog writes events to the events file without ever making a
// connection wait for the disk. A connection's Write encodes its event and
// queues the line; one writer goroutine writes what is queued in batches,
// one write(2) each. The queue is bounded: when the disk stalls or fills,
// events are dropped, never waited for, and every drop is counted (Stats),
// logged once per interval, reported by Health, and stated in the file by
// a gap record once writing works again. Write errors are not sticky: each
// batch tries again, on a freshly opened file.
//
// Rotation is lumberjack's (events.max_size); Reopen serves logrotate's
// SIGHUP. A line is never split across writes, a partial write on a full
// disk is cut back to the last whole line, and a file that ends in a torn
// line (the proxy was killed mid-write) gets a newline before new events.
package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	json "github.com/goccy/go-json"

	"go.uber.org/zap"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
)

// Why events are dropped: the label values of Stats.Dropped.
const (
	ReasonQueueFull   = "queue_full"   // the queue (events.queue_bytes) was full: the writer is behind or stalled
	ReasonWriteError  = "write_error"  // writing the file failed (disk full, I/O error, file not openable)
	ReasonTooLarge    = "too_large"    // the line is over limits.max_event_bytes
	ReasonEncodeError = "encode_error" // the event could not be encoded as JSON
	ReasonShutdown    = "shutdown"     // still queued when events.close_timeout ran out at shutdown
)

type reason int

const (
	queueFull reason = iota
	writeError
	tooLarge
	encodeError
	shutdown
	nReasons
)

// Reasons lists every drop reason, in a fixed order.
var Reasons = [nReasons]string{ReasonQueueFull, ReasonWriteError, ReasonTooLarge, ReasonEncodeError, ReasonShutdown}

// ErrClosed is returned by Write and Reopen after Close.
var ErrClosed = errors.New("eventlog: closed")

// Stats are the sink's counters since Open.
type Stats struct {
	// Written is how many events are in the file; gap records are not
	// counted here but in Gaps.
	Written int64
	// Gaps is how many gap records were written.
	Gaps int64
	// Dropped is how many events were lost, by reason (every reason is
	// present).
	Dropped map[string]int64
	// TornLines is how many incomplete lines were found at the end of
	// the file (a crash mid-write) or left by a failed write that could
	// not be cut back, each ended with a newline before new events.
	TornLines int64
	// Queued and QueuedBytes are the events waiting for the writer.
	Queued      int
	QueuedBytes int
}

// Tunables that are not configuration: they trade nothing a user needs
// to choose.
const (
	// batchBytes bounds one write(2); a longer line is still written whole.
	batchBytes = 256 << 10
	// logEvery is how often event loss is logged while it goes on.
	logEvery = 10 * time.Second
)

// Sink writes events to the events file. Its methods are safe for
// concurrent use.
type Sink struct {
	log      *zap.Logger
	path     string // "" for stdout: not reopened, torn tails not checked or cut
	out      output
	maxLine  int
	logEvery time.Duration

	wake    chan struct{} // cap 1: something was queued, or Close
	reopenc chan chan error
	done    chan struct{} // closed when the writer returns
	// closeErr is closing the file, by the writer as it returns; read
	// after done.
	closeErr error

	mu          sync.Mutex
	queue       [][]byte
	queuedBytes int
	queueBytes  int // the bound
	closed      bool
	// lost are the drops the file does not state yet; inflight those in
	// the gap record of the batch being written.
	lost, inflight gap
	written, gaps  int64
	torn           int64
	dropped        [nReasons]int64
	// Event loss is logged at most once per logEvery: unlogged are the
	// drops since the last such line, toldLoss whether that line said
	// events were being lost, and logTimer, when set, writes the next
	// line once logEvery has passed.
	unlogged [nReasons]int64
	lastLog  time.Time
	lastErr  error
	toldLoss bool
	logTimer *time.Timer

	// The writer goroutine's own state.
	opened bool
	// tornTail: the file ends in an incomplete line, so the next write
	// starts with a newline.
	tornTail bool
	buf      []byte
}

// output is where lines go. Close ends the current file; the next Write
// opens it again (the path, so a renamed file is left behind).
type output interface {
	io.Writer
	Close() error
}

// Open opens the events file c.Path ("-" is stdout) and starts the
// writer. maxLine is limits.max_event_bytes. It fails if the file cannot
// be opened, so a wrong path is found at start-up.
func Open(c config.Events, maxLine int, log *zap.Logger) (*Sink, error) {
	s := &Sink{
		log:        log,
		path:       c.Path,
		maxLine:    maxLine,
		queueBytes: c.QueueBytes,
		logEvery:   logEvery,
		wake:       make(chan struct{}, 1),
		reopenc:    make(chan chan error),
		done:       make(chan struct{}),
	}
	switch {
	case c.Path == "-":
		s.path = ""
		s.out = stdout{}
	case c.MaxSize > 0:
		// lumberjack would create a new file 0600; made here, it is 0644
		// as without rotation, and lumberjack gives its mode to the next.
		if f, err := os.OpenFile(c.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			f.Close()
		}
		s.out = &lumberjack.Logger{Filename: c.Path, MaxSize: c.MaxSize, MaxBackups: c.MaxBackups, Compress: c.Compress}
	default:
		s.out = &appendFile{path: c.Path}
	}
	if err := s.open(); err != nil {
		return nil, fmt.Errorf("eventlog: open events file: %w", err)
	}
	go s.run()
	return s, nil
}

// Write encodes ev and queues it for the writer; it never waits for the
// disk. It returns an error only for an event it refuses itself (too
// large, not encodable) and after Close. Events lost to a full queue or a
// failed write are not returned as errors, since the caller would log
// each one: they are counted, logged once per interval and stated in the
// file by a gap record.
func (s *Sink) Write(ev *event.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		err = fmt.Errorf("eventlog: encode event %s: %w", ev.ID, err)
		s.drop(encodeError, 1, err)
		return err
	}
	if len(b)+1 > s.maxLine {
		err := fmt.Errorf("eventlog: event %s is %d bytes, over limits.max_event_bytes %d", ev.ID, len(b)+1, s.maxLine)
		s.drop(tooLarge, 1, err)
		return err
	}
	b = append(b, '\n')
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		s.drop(shutdown, 1, ErrClosed)
		return ErrClosed
	case s.queuedBytes+len(b) > s.queueBytes:
		err := fmt.Errorf("queue full: %d bytes of events wait for the writer (events.queue_bytes %d)", s.queuedBytes, s.queueBytes)
		l := s.dropLocked(queueFull, 1, err)
		s.mu.Unlock()
		l.write(s.log)
		return nil
	}
	s.queue = append(s.queue, b)
	s.queuedBytes += len(b)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Reopen closes the events file and opens its path again, for logrotate:
// after it renames the file, events go to a new one. It waits for the
// writer (for the batch being written) until ctx ends.
func (s *Sink) Reopen(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case s.reopenc <- reply:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("eventlog: reopen: %w", ctx.Err())
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("eventlog: reopen: %w", ctx.Err())
	}
}

// Close writes what is queued, with a gap record for drops the file does
// not state yet, and closes the file. If ctx ends first (a stalled disk),
// what is still queued is counted as dropped (shutdown) and the writer
// closes the file whenever its write returns. The error says what was lost
// without a gap record in the file; the counters have it too.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	defer s.endLossLog()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.mu.Lock()
		n := len(s.queue)
		clear(s.queue)
		s.queue, s.queuedBytes = nil, 0
		l := s.dropLocked(shutdown, int64(n), fmt.Errorf("the writer was still busy when events.close_timeout ran out: %w", ctx.Err()))
		s.mu.Unlock()
		l.write(s.log)
		return fmt.Errorf("eventlog: close: %d events still queued were dropped; the writer is stuck writing %s: %w", n, s.name(), ctx.Err())
	}
	s.mu.Lock()
	lost := s.lost
	s.mu.Unlock()
	if n := lost.count(); n > 0 {
		return fmt.Errorf("eventlog: %d events dropped and not stated in %s (%s), last error: %w", n, s.name(), lost.reasons(), lost.err)
	}
	if s.closeErr != nil {
		return fmt.Errorf("eventlog: close %s: %w", s.name(), s.closeErr)
	}
	return nil
}

// Health is nil while every event is written or stated by a gap record;
// otherwise it says how many were dropped, since when and why. It is nil
// again once a write succeeds (with its gap record); the counters stay.
func (s *Sink) Health() error {
	s.mu.Lock()
	g := s.lost
	g.merge(s.inflight)
	s.mu.Unlock()
	if g.count() == 0 {
		return nil
	}
	return fmt.Errorf("events: %d dropped since %s (%s), last error: %w", g.count(), g.first.UTC().Format(time.RFC3339), g.reasons(), g.err)
}

// Stats returns the counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Written: s.written, Gaps: s.gaps, TornLines: s.torn,
		Dropped: make(map[string]int64, nReasons),
		Queued:  len(s.queue), QueuedBytes: s.queuedBytes,
	}
	for r, n := range s.dropped {
		st.Dropped[Reasons[r]] = n
	}
	return st
}

func (s *Sink) name() string {
	if s.path == "" {
		return "stdout"
	}
	return s.path
}

// run is the writer: it writes batches while there are events, and serves
// Reopen between batches. It closes the file when it returns, after Close,
// even if Close stopped waiting for it.
func (s *Sink) run() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
		case reply := <-s.reopenc:
			reply <- s.reopen()
			continue
		}
		for s.writeBatch(false) {
			select {
			case reply := <-s.reopenc:
				reply <- s.reopen()
			default:
			}
		}
		s.mu.Lock()
		closing := s.closed && len(s.queue) == 0
		s.mu.Unlock()
		if closing {
			// A last try to state the drops, without events to carry it.
			s.writeBatch(true)
			s.closeErr = s.out.Close()
			return
		}
	}
}

// writeBatch writes the next batch: a newline if the file ends in a torn
// line, the gap record if there were drops, and as many queued lines as
// fit. Without queued lines it writes nothing unless final: a gap record
// alone would retry a full disk in a loop. It reports whether it wrote.
func (s *Sink) writeBatch(final bool) bool {
	s.mu.Lock()
	if len(s.queue) == 0 && (!final || s.lost.count() == 0) {
		s.mu.Unlock()
		return false
	}
	s.inflight, s.lost = s.lost, gap{}
	inflight := s.inflight
	// Lines are taken while the batch is under batchBytes, the first
	// whatever its size (config makes a rotated file hold two of the
	// largest lines, so lumberjack never refuses it).
	gapLine := s.gapLine(inflight)
	var lines [][]byte
	size := len(gapLine)
	for _, l := range s.queue {
		if len(lines) > 0 && size+len(l) > batchBytes {
			break
		}
		size += len(l)
		lines = append(lines, l)
	}
	clear(s.queue[:len(lines)])
	s.queue = s.queue[len(lines):]
	s.queuedBytes -= size - len(gapLine)
	s.mu.Unlock()

	// ends are where each piece ends in buf: the newline for a torn tail
	// and the gap record (both may be absent), then each line.
	b := s.buf[:0]
	var ends []int
	pieces := 0 // the newline and the gap record
	if s.tornTail {
		b = append(b, '\n')
		ends = append(ends, len(b))
		pieces++
	}
	gapEnd := -1
	if len(gapLine) > 0 {
		b = append(b, gapLine...)
		ends = append(ends, len(b))
		gapEnd = len(b)
		pieces++
	}
	for _, l := range lines {
		b = append(b, l...)
		ends = append(ends, len(b))
	}
	s.buf = b

	var n int
	err := s.ensureOpen()
	if err == nil {
		n, err = s.out.Write(b)
	}
	whole := 0 // pieces written whole
	for whole < len(ends) && ends[whole] <= n {
		whole++
	}
	done := 0
	if whole > 0 {
		done = ends[whole-1]
	}
	if done > 0 || err == nil {
		s.tornTail = false
	}
	if err != nil {
		s.cutFragment(n - done)
		_ = s.out.Close() // the next batch opens the file afresh
		s.opened = false
	}

	s.mu.Lock()
	s.written += int64(max(whole-pieces, 0))
	if gapEnd >= 0 && gapEnd <= n {
		s.gaps++
	} else {
		s.lost.merge(inflight)
	}
	s.inflight = gap{}
	var l logLine
	if err != nil {
		l = s.dropLocked(writeError, int64(len(lines)-max(whole-pieces, 0)), err)
	} else {
		l = s.lossLogLocked() // perhaps: writing resumed
	}
	s.mu.Unlock()
	l.write(s.log)
	return true
}

// gapLine encodes the gap record for g, or nil when nothing was lost.
func (s *Sink) gapLine(g gap) []byte {
	if g.count() == 0 {
		return nil
	}
	// Marshal fails only for times outside years 0-9999; these are now.
	b, _ := json.Marshal(&event.Event{
		ID:      fmt.Sprintf("gap-%d", g.first.UnixNano()),
		Start:   g.first,
		End:     g.last,
		Kind:    event.KindGap,
		Dropped: g.count(),
		Error:   fmt.Sprintf("%s; last error: %v", g.reasons(), g.err),
	})
	return append(b, '\n')
}

// ensureOpen opens the file if a failed write closed it.
func (s *Sink) ensureOpen() error {
	if s.opened {
		return nil
	}
	return s.open()
}

// open opens the file, first checking whether it ends in a torn line; if
// so a newline ends it now (or, if that fails, before the next write).
func (s *Sink) open() error {
	var first []byte
	if s.path != "" && !s.tornTail {
		torn, err := endsTorn(s.path)
		if err != nil {
			s.log.Warn("could not check whether the events file ends in a torn line", zap.Error(err))
		}
		if torn {
			s.mu.Lock()
			s.torn++
			s.mu.Unlock()
			s.log.Warn("events file ends in a torn line (the proxy was stopped mid-write?); ending it with a newline, readers skip it", zap.String("path", s.path))
			first = []byte{'\n'}
		}
	}
	// A write of nothing makes the output open its file.
	if _, err := s.out.Write(first); err != nil {
		s.tornTail = s.tornTail || len(first) > 0
		return err
	}
	s.opened = true
	return nil
}

// reopen serves Reopen.
func (s *Sink) reopen() error {
	if s.path == "" {
		return nil
	}
	err := s.out.Close()
	s.opened = false
	if err2 := s.open(); err2 != nil {
		s.log.Error("events file not reopened; the next write tries again", zap.String("path", s.path), zap.Error(err2))
		return fmt.Errorf("eventlog: reopen %s: %w", s.path, errors.Join(err, err2))
	}
	s.log.Info("events file reopened", zap.String("path", s.path))
	return nil
}

// endsTorn reports whether the file at path is a non-empty regular file
// that does not end with a newline. A file that does not exist yet is not
// torn, nor a pipe (which opening would block on).
func endsTorn(path string) (bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && (!st.Mode().IsRegular() || st.Size() == 0)) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var last [1]byte
	if _, err := f.ReadAt(last[:], st.Size()-1); err != nil {
		return false, err
	}
	return last[0] != '\n', nil
}

// cutFragment removes the last n bytes of the file, the start of a line a
// failed write left (a full disk takes what fits), so that the file holds
// whole lines only. If it cannot (stdout, a pipe, an error), the next
// write starts with a newline instead.
func (s *Sink) cutFragment(n int) {
	if n <= 0 {
		return
	}
	if s.path != "" {
		// The writer is the file's only writer, so its last n bytes are
		// the fragment: a full tmpfs or ext4 always lets a file shrink.
		st, err := os.Stat(s.path)
		if err == nil && st.Mode().IsRegular() && st.Size() >= int64(n) {
			if err = os.Truncate(s.path, st.Size()-int64(n)); err == nil {
				return
			}
		}
		s.log.Warn("a failed write left part of a line in the events file; the next write ends it with a newline", zap.String("path", s.path), zap.Int("bytes", n), zap.Error(err))
	}
	if !s.tornTail {
		s.tornTail = true
		s.mu.Lock()
		s.torn++
		s.mu.Unlock()
	}
}

// drop counts n events lost for r.
func (s *Sink) drop(r reason, n int64, err error) {
	s.mu.Lock()
	l := s.dropLocked(r, n, err)
	s.mu.Unlock()
	l.write(s.log)
}

// dropLocked counts n events lost for r and returns the log line to
// write once the lock is released, if it is time for one.
func (s *Sink) dropLocked(r reason, n int64, err error) logLine {
	if n <= 0 {
		return logLine{}
	}
	s.dropped[r] += n
	s.lost.add(r, n, err, time.Now())
	s.unlogged[r] += n
	s.lastErr = err
	return s.lossLogLocked()
}

// lossLogLocked returns the line about event loss to log now, if there is
// news (drops, or writing resumed after a line that said events were
// lost) and the last line is logEvery old; otherwise it sets a timer for
// it. So a full disk, however often it comes and goes, makes one line per
// interval, and the last line always tells the state things ended in.
func (s *Sink) lossLogLocked() logLine {
	losing := s.lost.count()+s.inflight.count() > 0
	news := slices.ContainsFunc(s.unlogged[:], func(n int64) bool { return n > 0 }) || (s.toldLoss && !losing)
	if !news {
		return logLine{}
	}
	now := time.Now()
	// After Close there is no waiting: a few lines at most, and no timer
	// left running.
	if wait := s.lastLog.Add(s.logEvery).Sub(now); wait > 0 && !s.closed {
		if s.logTimer == nil {
			s.logTimer = time.AfterFunc(wait, s.flushLossLog)
		}
		return logLine{}
	}
	l := logLine{set: true, losing: losing, since: s.unlogged, err: s.lastErr, written: s.written, gaps: s.gaps}
	for _, d := range s.dropped {
		l.total += d
	}
	s.lastLog, s.unlogged, s.toldLoss = now, [nReasons]int64{}, losing
	return l
}

// endLossLog writes the line a timer waits for now, at Close.
func (s *Sink) endLossLog() {
	s.mu.Lock()
	var l logLine
	if s.logTimer != nil && s.logTimer.Stop() {
		s.logTimer = nil
		l = s.lossLogLocked()
	}
	s.mu.Unlock()
	l.write(s.log)
}

// flushLossLog is logTimer's: the line that had to wait.
func (s *Sink) flushLossLog() {
	s.mu.Lock()
	s.logTimer = nil
	l := s.lossLogLocked()
	s.mu.Unlock()
	l.write(s.log)
}

// logLine is a line about event loss, prepared under the lock and written
// after it.
type logLine struct {
	set    bool
	losing bool            // events are being lost now
	since  [nReasons]int64 // drops since the last such line
	total  int64
	err    error
	// written and gaps are the totals, so that gap records written
	// between two lines show.
	written, gaps int64
}

func (l logLine) write(log *zap.Logger) {
	if !l.set {
		return
	}
	fields := []zap.Field{zap.Int64("dropped_total", l.total), zap.Int64("written_total", l.written), zap.Int64("gap_records_total", l.gaps)}
	for r, n := range l.since {
		if n > 0 {
			fields = append(fields, zap.Int64(Reasons[r], n))
		}
	}
	if l.losing {
		log.Error("events dropped", append(fields, zap.Error(l.err))...)
		return
	}
	log.Warn("events: writing resumed; gap records in the file state the events dropped", append(fields, zap.NamedError("last_error", l.err))...)
}

// gap is a run of drops: how many by reason, when, and the last error.
type gap struct {
	n           [nReasons]int64
	first, last time.Time
	err         error
}

func (g *gap) count() int64 {
	var t int64
	for _, n := range g.n {
		t += n
	}
	return t
}

func (g *gap) add(r reason, n int64, err error, at time.Time) {
	if g.count() == 0 || at.Before(g.first) {
		g.first = at
	}
	if at.After(g.last) {
		g.last = at
	}
	g.n[r] += n
	g.err = err
}

// merge adds o, an earlier run (a gap record that was not written), to g.
func (g *gap) merge(o gap) {
	if o.count() == 0 {
		return
	}
	if g.count() == 0 {
		*g = o
		return
	}
	for r, n := range o.n {
		g.n[r] += n
	}
	if o.first.Before(g.first) {
		g.first = o.first
	}
	if o.last.After(g.last) {
		g.last = o.last
	}
}

// reasons is "queue_full 80, write_error 37".
func (g *gap) reasons() string {
	var parts []string
	for r, n := range g.n {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", Reasons[r], n))
		}
	}
	return strings.Join(parts, ", ")
}

// appendFile is the events file without rotation: opened for appending,
// and opened again by path after Close (SIGHUP, a failed write).
type appendFile struct {
	path string
	f    *os.File
}

func (a *appendFile) Write(p []byte) (int, error) {
	if a.f == nil {
		f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return 0, err
		}
		a.f = f
	}
	return a.f.Write(p)
}

func (a *appendFile) Close() error {
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

// stdout is "-": never closed.
type stdout struct{}

func (stdout) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdout) Close() error                { return nil }
