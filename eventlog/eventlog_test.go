package eventlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testevents"
	"github.com/inspectproxy/inspectproxy/internal/testtmpfs"
)

// lumberjack starts one goroutine per Logger for compressing and removing
// backups, and never stops it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun"))
}

// ev is event i, padded with pad bytes of error text.
func ev(i, pad int) *event.Event {
	return &event.Event{
		ID: fmt.Sprintf("t-%d", i), Kind: event.KindTunnel, Target: "example.com:443", Client: "127.0.0.1:50000",
		Start: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), End: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
		Error: strings.Repeat("x", pad),
	}
}

func cfg(path string) config.Events {
	c := config.Default().Events
	c.Path = path
	return c
}

func open(t *testing.T, c config.Events, maxLine int) *Sink {
	t.Helper()
	s, err := Open(c, maxLine, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func closeSink(t *testing.T, s *Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// waitFor polls cond; a minute is a hang, not slowness.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestConcurrentWritesAreWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s := open(t, cfg(path), 1<<20)
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			for i := range 100 {
				// Sizes from 200 B to 8 KiB, so batches split at
				// different places.
				if err := s.Write(ev(g*100+i, (g*100+i)*300%8000)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	closeSink(t, s)
	c := testevents.ReadFile(t, path)
	if len(c.IDs) != 2000 || len(c.Gaps) != 0 || len(c.Torn) != 0 {
		t.Fatalf("%d events, %d gaps, %d torn lines; want 2000, 0, 0", len(c.IDs), len(c.Gaps), len(c.Torn))
	}
	slices.Sort(c.IDs)
	if len(slices.Compact(c.IDs)) != 2000 {
		t.Error("an event was written twice")
	}
	st := s.Stats()
	if st.Written != 2000 || st.Gaps != 0 || st.Queued != 0 || st.QueuedBytes != 0 {
		t.Errorf("stats %+v", st)
	}
	for r, n := range st.Dropped {
		if n != 0 {
			t.Errorf("dropped %s = %d", r, n)
		}
	}
	if err := s.Health(); err != nil {
		t.Errorf("Health = %v", err)
	}
	if err := s.Write(ev(0, 0)); err != ErrClosed {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}

// stalledFIFO makes a FIFO with a reader that does not read yet: writes to
// it block once the pipe's 64 KiB are full, as on a stalled disk.
func stalledFIFO(t *testing.T) (path string, r *os.File) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "events.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return path, r
}

// TestQueueFullWhileStalled: with the writer stuck in write(2), Write keeps
// returning at once, the overflow is counted and reported, and when the
// reader drains the pipe, a gap record states exactly the drops.
func TestQueueFullWhileStalled(t *testing.T) {
	path, r := stalledFIFO(t)
	c := cfg(path)
	c.QueueBytes = 64 << 10
	core, logs := observer.New(zap.InfoLevel)
	s, err := Open(c, 1<<20, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000 // ~2 MB: the pipe, a batch and the queue hold far less
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := range n {
			if err := s.Write(ev(i, 900)); err != nil {
				t.Error(err)
			}
		}
	}()
	select {
	case <-wrote:
	case <-time.After(time.Minute):
		t.Fatal("Write blocked on a stalled writer")
	}
	st := s.Stats()
	full := st.Dropped[ReasonQueueFull]
	if full == 0 || st.QueuedBytes > c.QueueBytes {
		t.Fatalf("stats %+v: want queue_full drops and at most %d bytes queued", st, c.QueueBytes)
	}
	herr := s.Health()
	if herr == nil || !strings.Contains(herr.Error(), "dropped since") || !strings.Contains(herr.Error(), "last error: queue full") {
		t.Errorf("Health = %v", herr)
	}
	// Thousands of drops, a handful of log lines: the first at once,
	// then one per interval.
	if got := logs.FilterMessage("events dropped").Len(); got < 1 || got > 3 {
		t.Errorf("%d log lines about drops, want 1 to 3", got)
	}

	var got bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(&got, r); copied <- err }()
	waitFor(t, "the queue to drain", func() bool { return s.Stats().Queued == 0 })
	if err := s.Write(ev(n, 900)); err != nil {
		t.Fatal(err)
	}
	closeSink(t, s)
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	// The queue can fill before the writer has started its first write;
	// then the few drops until then have a gap record of their own.
	fc := testevents.Read(t, &got)
	if fc.Stated() != full || len(fc.Gaps) == 0 || !strings.Contains(fc.Gaps[len(fc.Gaps)-1].Error, "queue_full") {
		t.Fatalf("gap records %+v, want them to state %d queue_full drops", fc.Gaps, full)
	}
	if int64(len(fc.IDs))+full != n+1 || len(fc.Torn) != 0 {
		t.Errorf("%d events + %d dropped != %d written (%d torn lines)", len(fc.IDs), full, n+1, len(fc.Torn))
	}
	if fc.IDs[len(fc.IDs)-1] != fmt.Sprintf("t-%d", n) {
		t.Errorf("last event %s", fc.IDs[len(fc.IDs)-1])
	}
	if st := s.Stats(); st.Written != int64(len(fc.IDs)) || st.Gaps != int64(len(fc.Gaps)) {
		t.Errorf("stats %+v disagree with the file: %d events, %d gap records", st, len(fc.IDs), len(fc.Gaps))
	}
	if err := s.Health(); err != nil {
		t.Errorf("Health after the gap record = %v", err)
	}
	if all := logs.All(); all[len(all)-1].Message != resumed {
		t.Errorf("the last log line is %q, want %q", all[len(all)-1].Message, resumed)
	}
}

const resumed = "events: writing resumed; gap records in the file state the events dropped"

// TestLossLog: loss is logged at once, then at most once per interval,
// each line with the drops since the one before; the line after the last
// change says writing resumed, without waiting for more traffic.
func TestLossLog(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	s, err := Open(cfg(filepath.Join(t.TempDir(), "events.jsonl")), 300, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.logEvery = 200 * time.Millisecond
	s.mu.Unlock()
	for i := range 5 {
		_ = s.Write(ev(i, 200)) // too large
	}
	if n := logs.FilterMessage("events dropped").Len(); n != 1 {
		t.Fatalf("%d lines at once, want 1", n)
	}
	waitFor(t, "the second line", func() bool { return logs.FilterMessage("events dropped").Len() == 2 })
	second := logs.FilterMessage("events dropped").All()[1].ContextMap()
	if second["too_large"] != int64(4) || second["dropped_total"] != int64(5) {
		t.Errorf("second line %v, want the 4 drops after the first of 5", second)
	}
	if err := s.Write(ev(5, 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writing resumed", func() bool { return logs.FilterMessage(resumed).Len() == 1 })
	closeSink(t, s)
	if n := logs.Len(); n != 3 {
		t.Errorf("%d log lines, want 3: %v", n, logs.All())
	}
}

// TestCloseWhileStalled: Close gives up at its deadline, counts what is
// still queued, and the writer states it all once the disk answers.
func TestCloseWhileStalled(t *testing.T) {
	path, r := stalledFIFO(t)
	c := cfg(path)
	c.QueueBytes = 64 << 10
	s := open(t, c, 1<<20)
	for i := range 1000 {
		_ = s.Write(ev(i, 900))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Close(ctx)
	st := s.Stats()
	if err == nil || !strings.Contains(err.Error(), "still queued were dropped") || st.Dropped[ReasonShutdown] == 0 || st.Queued != 0 {
		t.Fatalf("Close = %v, stats %+v", err, st)
	}
	// The reader drains: the writer finishes its batch, writes the gap
	// record and closes the pipe.
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	fc := testevents.Read(t, bytes.NewReader(b))
	st = s.Stats()
	dropped := st.Dropped[ReasonShutdown] + st.Dropped[ReasonQueueFull]
	if fc.Stated() != dropped || int64(len(fc.Gaps)) != st.Gaps || int64(len(fc.IDs))+dropped != 1000 || !strings.Contains(fc.Gaps[len(fc.Gaps)-1].Error, "shutdown") {
		t.Errorf("%d events, gaps %+v; stats %+v", len(fc.IDs), fc.Gaps, st)
	}
}

func TestRefusedEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s := open(t, cfg(path), 2048)
	if err := s.Write(ev(1, 4000)); err == nil || !strings.Contains(err.Error(), "over limits.max_event_bytes 2048") {
		t.Errorf("oversize event: %v", err)
	}
	nan := ev(2, 0)
	nan.TCP = &event.TCP{DNSMS: new(math.NaN())}
	if err := s.Write(nan); err == nil || !strings.Contains(err.Error(), "encode event t-2") {
		t.Errorf("NaN: %v", err)
	}
	st := s.Stats()
	if st.Dropped[ReasonTooLarge] != 1 || st.Dropped[ReasonEncodeError] != 1 {
		t.Errorf("dropped %v", st.Dropped)
	}
	if err := s.Health(); err == nil || !strings.Contains(err.Error(), "events: 2 dropped") || !strings.Contains(err.Error(), "too_large 1, encode_error 1") {
		t.Errorf("Health = %v", err)
	}
	if err := s.Write(ev(3, 0)); err != nil {
		t.Fatal(err)
	}
	closeSink(t, s)
	fc := testevents.ReadFile(t, path)
	if !slices.Equal(fc.Order, []string{"gap", "t-3"}) || fc.Gaps[0].Dropped != 2 || !strings.Contains(fc.Gaps[0].Error, "too_large 1, encode_error 1; last error: eventlog: encode event t-2") {
		t.Errorf("file %+v", fc)
	}
	if err := s.Health(); err != nil {
		t.Errorf("Health = %v", err)
	}
}

// TestTornTail: a file that ends mid-line (a crash mid-write) gets a
// newline first, so the first new event is a line of its own; a file
// that ends whole gets nothing.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name, before string
		torn         int64
		order        []string
	}{
		{"torn", `{"id":"a","kind":"tunnel"}` + "\n" + `{"id":"b","kin`, 1, []string{"a", "torn", "t-1"}},
		{"whole", `{"id":"a","kind":"tunnel"}` + "\n", 0, []string{"a", "t-1"}},
		{"empty", "", 0, []string{"t-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			if err := os.WriteFile(path, []byte(tc.before), 0o644); err != nil {
				t.Fatal(err)
			}
			s := open(t, cfg(path), 1<<20)
			if err := s.Write(ev(1, 0)); err != nil {
				t.Fatal(err)
			}
			closeSink(t, s)
			if fc := testevents.ReadFile(t, path); !slices.Equal(fc.Order, tc.order) {
				t.Errorf("lines %v, want %v", fc.Order, tc.order)
			}
			if st := s.Stats(); st.TornLines != tc.torn {
				t.Errorf("torn lines %d, want %d", st.TornLines, tc.torn)
			}
		})
	}
}

// TestReopenAfterRename is logrotate's create mode: rename, create, SIGHUP.
func TestReopenAfterRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s := open(t, cfg(path), 1<<20)
	for i := range 10 {
		_ = s.Write(ev(i, 100))
	}
	waitFor(t, "10 events written", func() bool { return s.Stats().Written == 10 })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Reopen(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 20; i++ {
		_ = s.Write(ev(i, 100))
	}
	closeSink(t, s)
	if old := testevents.ReadFile(t, path+".1"); len(old.IDs) != 10 || old.IDs[9] != "t-9" {
		t.Errorf("rotated file: %v", old.Order)
	}
	if cur := testevents.ReadFile(t, path); len(cur.IDs) != 10 || cur.IDs[0] != "t-10" {
		t.Errorf("new file: %v", cur.Order)
	}
	if err := s.Reopen(ctx); err != ErrClosed {
		t.Errorf("Reopen after Close = %v", err)
	}
}

// TestRotation writes 4.7 MiB with events.max_size 2: lumberjack's backups
// are NAME-TIMESTAMP.EXT.gz, gzip itself checks them, each holds whole
// lines, and together they hold every event in order.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	c := cfg(path)
	c.MaxSize, c.Compress = 2, true
	s := open(t, c, 1<<20)
	const n = 80
	for i := range n {
		if err := s.Write(ev(i, 60<<10)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 { // lumberjack names backups by the millisecond
			waitFor(t, "the queue to drain", func() bool { return s.Stats().Queued == 0 })
			time.Sleep(2 * time.Millisecond)
		}
	}
	closeSink(t, s)
	name := regexp.MustCompile(`^events-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.jsonl\.gz$`)
	var backups []string
	waitFor(t, "lumberjack to compress the backups", func() bool {
		backups = backups[:0]
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Name() == "events.jsonl" {
				continue
			}
			if !name.MatchString(e.Name()) {
				return false // not compressed yet
			}
			backups = append(backups, e.Name())
		}
		return len(backups) >= 2
	})
	slices.Sort(backups) // the timestamp sorts
	var all []string
	for _, b := range backups {
		p := filepath.Join(dir, b)
		if out, err := exec.Command("gzip", "-t", p).CombinedOutput(); err != nil {
			t.Fatalf("gzip -t %s: %v %s", b, err, out)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > 2<<20 {
			t.Errorf("%s holds %d bytes, over max_size", b, len(raw))
		}
		fc := testevents.Read(t, bytes.NewReader(raw))
		if len(fc.Torn)+len(fc.Gaps) != 0 {
			t.Errorf("%s: %d torn lines, %d gaps", b, len(fc.Torn), len(fc.Gaps))
		}
		all = append(all, fc.IDs...)
	}
	all = append(all, testevents.ReadFile(t, path).IDs...)
	// The file is 0644 (less the umask) as without rotation, not
	// lumberjack's 0600.
	ref := filepath.Join(t.TempDir(), "ref")
	if err := os.WriteFile(ref, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := mode(t, path), mode(t, ref); got != want {
		t.Errorf("events file mode %v, want %v", got, want)
	}
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("t-%d", i)
	}
	if !slices.Equal(all, want) {
		t.Errorf("events across %d files: %d, in order: %v", len(backups)+1, len(all), slices.Equal(slices.Sorted(slices.Values(all)), slices.Sorted(slices.Values(want))))
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// droppedTotal is st's events lost for any reason.
func droppedTotal(st Stats) int64 {
	var n int64
	for _, d := range st.Dropped {
		n += d
	}
	return n
}

func TestMaxBackups(t *testing.T) {
	dir := t.TempDir()
	c := cfg(filepath.Join(dir, "events.jsonl"))
	c.MaxSize, c.MaxBackups = 2, 1
	s := open(t, c, 1<<20)
	for i := range 120 {
		_ = s.Write(ev(i, 60<<10))
		if i%10 == 0 {
			waitFor(t, "the queue to drain", func() bool { return s.Stats().Queued == 0 })
			time.Sleep(2 * time.Millisecond)
		}
	}
	closeSink(t, s)
	waitFor(t, "lumberjack to remove old backups", func() bool {
		ents, _ := os.ReadDir(dir)
		return len(ents) == 2 // events.jsonl and one backup
	})
}

// TestDiskFull fills a real 1 MiB tmpfs: writes fail with ENOSPC, the
// partial line the kernel took is cut back, the loss is counted and
// reported, and once space is freed writing resumes with a gap record
// stating exactly the lost events.
func TestDiskFull(t *testing.T) {
	dir := testtmpfs.Mount(t, 1<<20)
	path := filepath.Join(dir, "events.jsonl")
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 512<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	s := open(t, cfg(path), 1<<20)
	i := 0
	write := func(k int) {
		for range k {
			if err := s.Write(ev(i, 1500)); err != nil {
				t.Fatal(err)
			}
			i++
			if i%20 == 0 { // batches of a few lines, so some fit and some are cut
				waitFor(t, "the queue to drain", func() bool { return s.Stats().Queued == 0 })
			}
		}
		// Every event written or counted lost: an empty queue is not
		// enough, the writer may still hold its last batch.
		waitFor(t, "every event accounted for", func() bool {
			st := s.Stats()
			return st.Written+droppedTotal(st) == int64(i)
		})
	}
	write(600) // ~1 MB into the 512 KiB left
	st := s.Stats()
	lost := st.Dropped[ReasonWriteError]
	if lost == 0 {
		t.Fatalf("no write errors on a full tmpfs: %+v", st)
	}
	herr := s.Health()
	if herr == nil || !strings.Contains(herr.Error(), "no space left on device") {
		t.Errorf("Health = %v", herr)
	}
	// What is on disk now: whole lines only, as many events and gap
	// records as were counted. On a nearly full disk a small gap record
	// can fit where an event does not, so the file may state some losses
	// already; Health states the rest.
	fc := testevents.ReadFile(t, path)
	var pending int64
	if herr != nil {
		_, _ = fmt.Sscanf(herr.Error(), "events: %d dropped", &pending)
	}
	if len(fc.Torn) != 0 || int64(len(fc.IDs)) != st.Written || int64(len(fc.Gaps)) != st.Gaps || fc.Stated()+pending != lost {
		t.Errorf("full disk: file has %d events, %d gap records stating %d, %d torn lines; stats %+v; Health says %d", len(fc.IDs), len(fc.Gaps), fc.Stated(), len(fc.Torn), st, pending)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	write(10)
	if err := s.Health(); err != nil {
		t.Errorf("Health after space came back = %v", err)
	}
	closeSink(t, s)
	fc = testevents.ReadFile(t, path)
	st = s.Stats()
	if len(fc.Torn) != 0 || int64(len(fc.IDs)) != st.Written || int64(len(fc.Gaps)) != st.Gaps || fc.Stated() != lost || st.Written+lost != int64(i) {
		t.Errorf("file: %d events, %d gap records stating %d, %d torn lines; stats %+v; %d written by the test", len(fc.IDs), len(fc.Gaps), fc.Stated(), len(fc.Torn), st, i)
	}
	if !slices.Equal(fc.IDs[len(fc.IDs)-10:], []string{"t-600", "t-601", "t-602", "t-603", "t-604", "t-605", "t-606", "t-607", "t-608", "t-609"}) {
		t.Errorf("the events written after space came back: %v", fc.Order[len(fc.Order)-12:])
	}
	for _, g := range fc.Gaps {
		if !strings.Contains(g.Error, "no space left on device") || g.End.Before(g.Start) {
			t.Errorf("gap record %+v", g)
		}
	}
}
