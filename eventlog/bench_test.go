package eventlog

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/event"
)

// benchEvents are the report's sample events: real tunnels, mitm and http
// connections, 424 to 1,867 bytes.
func benchEvents(b *testing.B) []*event.Event {
	f, err := os.Open("../report/testdata/events.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var evs []*event.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			b.Fatal(err)
		}
		evs = append(evs, &e)
	}
	return evs
}

// BenchmarkWrite is events through the sink into a file, from as many
// goroutines as -cpu says, as connections finish in parallel. written/s
// is what reached the file (Close included); dropped/op should be 0.
func BenchmarkWrite(b *testing.B) {
	evs := benchEvents(b)
	c := cfg(filepath.Join(b.TempDir(), "events.jsonl"))
	c.QueueBytes = 256 << 20
	s, err := Open(c, 1<<20, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = s.Write(evs[i%len(evs)])
			i++
		}
	})
	if err := s.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	st := s.Stats()
	b.ReportMetric(float64(st.Written)/time.Since(start).Seconds(), "written/s")
	b.ReportMetric(float64(droppedTotal(st))/float64(b.N), "dropped/op")
}

// BenchmarkEncode is json.Marshal of one event on one goroutine: the most
// events/s a writer that encoded them itself could take.
func BenchmarkEncode(b *testing.B) {
	evs := benchEvents(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := json.Marshal(evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkFileWrite is the writer's own share: encoded lines appended to
// a file in batches of batchBytes, per line.
func BenchmarkFileWrite(b *testing.B) {
	evs := benchEvents(b)
	var lines [][]byte
	for _, e := range evs {
		l, _ := json.Marshal(e)
		lines = append(lines, append(l, '\n'))
	}
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "events.jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 0, batchBytes+4096)
	i := 0
	for b.Loop() {
		buf = append(buf, lines[i%len(lines)]...)
		i++
		if len(buf) >= batchBytes {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
			buf = buf[:0]
		}
	}
}
