package report

import (
	"bytes"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/golden"
	"github.com/inspectproxy/inspectproxy/outcome"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const goldenEvents = "testdata/events.jsonl"

func buildGolden(t *testing.T) *Report {
	t.Helper()
	f, err := os.Open(goldenEvents)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Build(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestWriteGolden(t *testing.T) {
	rep := buildGolden(t)
	for _, tc := range []struct{ format, file string }{
		{"text", "report.txt"},
		{"json", "report.json"},
		{"csv", "report.csv"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var b bytes.Buffer
			if err := rep.Write(&b, tc.format); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, tc.file, b.Bytes())
		})
	}
}

func TestWriteUnknownFormat(t *testing.T) {
	rep := buildGolden(t)
	for _, format := range []string{"har", "xml", ""} {
		t.Run(format, func(t *testing.T) {
			if err := rep.Write(io.Discard, format); !errors.Is(err, ErrFormat) {
				t.Errorf("Write(%q) = %v, want ErrFormat", format, err)
			}
		})
	}
}

func TestStats(t *testing.T) {
	for _, tc := range []struct {
		name                string
		in                  []float64
		p50, p95, p99, maxV float64
	}{
		{"one", []float64{7}, 7, 7, 7, 7},
		{"two", []float64{9, 1}, 1, 9, 9, 9},
		// Nearest rank: p50 of 4 is rank 2, not the mean of ranks 2 and 3.
		{"four", []float64{4, 3, 2, 1}, 2, 4, 4, 4},
		// p95 of 20 is rank 19 exactly; float rounding must not make it 20.
		{"twenty", seq(20), 10, 19, 20, 20},
		{"hundred", seq(100), 50, 95, 99, 100},
		{"hundred and one", seq(101), 51, 96, 100, 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stats(tc.in)
			if s.N != len(tc.in) || *s.P50 != tc.p50 || *s.P95 != tc.p95 || *s.P99 != tc.p99 || *s.Max != tc.maxV {
				t.Errorf("stats = n %d p50 %v p95 %v p99 %v max %v, want %v %v %v %v",
					s.N, *s.P50, *s.P95, *s.P99, *s.Max, tc.p50, tc.p95, tc.p99, tc.maxV)
			}
		})
	}
	if s := stats(nil); s.N != 0 || s.P50 != nil || s.Max != nil {
		t.Errorf("stats(nil) = %+v, want zero", s)
	}
}

// seq is 1..n in reverse, so that stats has to sort.
func seq(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(n - i)
	}
	return s
}

// TestUnmeasuredIsSkipped checks that null fields lower n instead of
// counting as zero.
func TestUnmeasuredIsSkipped(t *testing.T) {
	rep := buildGolden(t)
	for _, tc := range []struct {
		host, phase string
		n           int
		p50         string
	}{
		{"93.184.215.14:443", PhaseDNS, 0, "-"},            // IP literal: dns null
		{"down.example.com:443", PhaseConnect, 0, "-"},     // refused
		{"down.example.com:443", PhaseDNS, 1, "27.8"},      // but resolved
		{"down.example.com:443", PhaseTotal, 0, "-"},       // never connected
		{"stream.example.com:443", PhaseTTFB, 0, "-"},      // no application data
		{"login.example.com:443", PhaseTTFB, 1, "142.6"},   // second request failed: wait null
		{"legacy.example.org:80", PhaseTTFB, 3, "41.9"},    // three requests, one upstream
		{"api.example.com:443", PhaseReceive, 0, "-"},      // tunnels: unmeasurable
		{"api.example.com:443", PhaseTTFB, 4, "52.3"},      // down - up
		{"images.example.org:80", PhaseConnect, 1, "27.3"}, // second upstream of one client connection
	} {
		t.Run(tc.host+"/"+tc.phase, func(t *testing.T) {
			p := phase(t, rep, tc.host, tc.phase)
			if p.N != tc.n || fmtMS(p.P50) != tc.p50 {
				t.Errorf("n %d p50 %s, want n %d p50 %s", p.N, fmtMS(p.P50), tc.n, tc.p50)
			}
		})
	}
}

func phase(t *testing.T, rep *Report, host, name string) Phase {
	t.Helper()
	for _, h := range rep.Hosts {
		if h.Name != host {
			continue
		}
		for _, p := range h.Phases {
			if p.Name == name {
				return p
			}
		}
	}
	t.Fatalf("no %s %s in the report", host, name)
	return Phase{}
}

func TestTunnelTTFB(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		name string
		tls  *event.TLS
		want float64
		ok   bool
	}{
		{"no TLS", nil, 0, false},
		{"no app data", &event.TLS{}, 0, false},
		{"only up", &event.TLS{AppDataUpMS: f(10)}, 0, false},
		{"only down", &event.TLS{AppDataDownMS: f(10)}, 0, false},
		{"down before up", &event.TLS{AppDataUpMS: f(10), AppDataDownMS: f(9)}, 0, false},
		{"measured", &event.TLS{AppDataUpMS: f(100.1), AppDataDownMS: f(152.4)}, 52.3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tunnelTTFB(tc.tls)
			if got != tc.want || ok != tc.ok {
				t.Errorf("tunnelTTFB = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestBuildInput(t *testing.T) {
	good, err := os.ReadFile(goldenEvents)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(good, []byte("\n"))
	for _, tc := range []struct {
		name      string
		in        io.Reader
		events    int
		malformed int
		err       error  // errors.Is target
		errText   string // substring, when err is nil but one is expected
	}{
		{"golden", bytes.NewReader(good), 11, 0, nil, ""},
		{"blank lines", strings.NewReader("\n" + string(first) + "\n\n"), 1, 0, nil, ""},
		{"torn last line", bytes.NewReader(append(bytes.Clone(good), first[:40]...)), 11, 1, nil, ""},
		{"garbage between", strings.NewReader(string(first) + "\nnot json\n" + string(first) + "\n"), 2, 1, nil, ""},
		{"empty", strings.NewReader(""), 0, 0, nil, ""},
		{"nothing but garbage", strings.NewReader("a\nb\n"), 0, 0, ErrNoEvents, ""},
		// An over-long line is skipped and counted; reading goes on after it.
		{"line too long", io.MultiReader(strings.NewReader(strings.Repeat("x", event.MaxLine+1)+"\n"), bytes.NewReader(good)), 11, 1, nil, ""},
		{"read error", io.MultiReader(bytes.NewReader(first), iotest.ErrReader(errors.New("disk on fire"))), 0, 0, nil, "disk on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Build(tc.in, Options{})
			switch {
			case tc.err != nil || tc.errText != "":
				if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Build error = %v, want %v %q", err, tc.err, tc.errText)
				}
			case err != nil:
				t.Fatal(err)
			case rep.Events != tc.events || rep.Malformed != tc.malformed:
				t.Errorf("events %d malformed %d, want %d %d", rep.Events, rep.Malformed, tc.events, tc.malformed)
			case tc.malformed > 0 && !strings.Contains(rep.FirstMalformed, "line"):
				t.Errorf("FirstMalformed %q names no line", rep.FirstMalformed)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	in, err := os.ReadFile(goldenEvents)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		size  int64
		lines int // "\r" updates expected at least
		last  string
	}{
		// Input is decoded in batches of 512 kB: this file is one.
		{"size known", int64(len(in)), 1, "\rreading events: 100% of 9.9 kB, 11 events\n"},
		{"size unknown", 0, 1, "\rreading events: 9.9 kB, 11 events\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if _, err := Build(bytes.NewReader(in), Options{Progress: &out, Size: tc.size, ProgressFrom: 1}); err != nil {
				t.Fatal(err)
			}
			s := out.String()
			if !strings.HasSuffix(s, tc.last) || strings.Count(s, "\r") < tc.lines || strings.Count(s, "\n") != 1 {
				t.Errorf("progress output %q: want >= %d updates ending in %q", s, tc.lines, tc.last)
			}
		})
	}
}

// TestNoProgressForSmallFiles: a 9.9 kB file is read before anyone could
// read a progress line.
func TestNoProgressForSmallFiles(t *testing.T) {
	in, err := os.ReadFile(goldenEvents)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := Build(bytes.NewReader(in), Options{Progress: &out, Size: int64(len(in))}); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("progress for a small file: %q", out.String())
	}
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {999, "999 B"}, {1000, "1.0 kB"}, {1_500_000, "1.5 MB"}, {1_073_741_824, "1.1 GB"}} {
		if got := byteSize(tc.n); got != tc.want {
			t.Errorf("byteSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestWaterfallSelection(t *testing.T) {
	const n, keep = 60, 5
	rep, err := Build(&genReader{n: n}, Options{Waterfall: keep})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.first) != keep || len(rep.slowest) != keep {
		t.Fatalf("kept %d first and %d slowest, want %d each", len(rep.first), len(rep.slowest), keep)
	}
	for i, c := range rep.first {
		if want := genEvent(i).ID; c.id != want {
			t.Errorf("first[%d] = %s, want %s", i, c.id, want)
		}
	}
	// The slowest kept must be at least as slow as every other connection.
	floor := rep.slowest[keep-1].keyMS
	for i := range n {
		if ev := genEvent(i); layout(ev, outcome.Of(ev)).keyMS > floor && !kept(rep.slowest, ev.ID) {
			t.Errorf("%s is slower than the slowest kept floor %.1f ms but was dropped", ev.ID, floor)
		}
	}
	for i := 1; i < keep; i++ {
		if rep.slowest[i].keyMS > rep.slowest[i-1].keyMS {
			t.Errorf("slowest not sorted at %d", i)
		}
	}
}

func kept(cs []conn, id string) bool {
	for _, c := range cs {
		if c.id == id {
			return true
		}
	}
	return false
}

// TestBoundedMemory checks that reading does not keep events: the heap,
// measured while streaming, stays far below what the events would take.
func TestBoundedMemory(t *testing.T) {
	// Samples are 5-7 float64 per event: under 3 MB for 50k events, slices
	// doubling. Keeping the events takes 2 kB each: 24 MB for 12k.
	const bound = 16 << 20
	for _, tc := range []struct {
		name string
		run  func(r io.Reader) error
	}{
		{"build", func(r io.Reader) error { _, err := Build(r, Options{}); return err }},
		{"har", func(r io.Reader) error { return WriteHAR(io.Discard, r, Options{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			base, peak := ms.HeapAlloc, uint64(0)
			sample := func(i int) {
				if i%(memEvents/6) == 0 || i == memEvents-1 {
					runtime.GC()
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapAlloc)
				}
			}
			if err := tc.run(&genReader{n: memEvents, onLine: sample}); err != nil {
				t.Fatal(err)
			}
			grown := int64(peak) - int64(base)
			t.Logf("heap grew by %.1f MB reading %d events", float64(grown)/(1<<20), memEvents)
			if grown > bound {
				t.Errorf("heap grew by %d MB reading %d events, want under %d MB", grown>>20, memEvents, bound>>20)
			}
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	var in bytes.Buffer
	if _, err := io.Copy(&in, &genReader{n: 20_000}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(in.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(bytes.NewReader(in.Bytes()), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
