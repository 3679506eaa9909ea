package otelexport

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/golden"
)

// readEvents reads testdata/events.jsonl: hand-written events, one per
// shape the mapping must handle (tunnel with Happy Eyeballs and HRR,
// server alert and reset, pinning rejection, MITM with two upstreams and a
// 502, plain HTTP whose DNS failed, a DNS lookup, a QUIC flow).
func readEvents(t *testing.T) []*event.Event {
	t.Helper()
	f, err := os.Open("testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := event.NewReader(f)
	var evs []*event.Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
}

// TestPlanGolden renders each event's spans as a tree with times in ms
// from the accept; the golden file is the reviewed mapping.
func TestPlanGolden(t *testing.T) {
	var b strings.Builder
	for _, ev := range readEvents(t) {
		spans := plan(ev)
		fmt.Fprintf(&b, "== %s (%s)\n", ev.ID, ev.Kind)
		renderTree(&b, ev.Start, spans, -1, 0)
		b.WriteString("\n")
	}
	golden.Check(t, "plan.golden", []byte(b.String()))
}

func renderTree(b *strings.Builder, t0 time.Time, spans []span, parent, depth int) {
	ms := func(t time.Time) string { return fmt.Sprintf("%.3f", float64(t.Sub(t0))/1e6) }
	for i := range spans {
		s := &spans[i]
		if s.parent != parent {
			continue
		}
		ind := strings.Repeat("  ", depth)
		fmt.Fprintf(b, "%s%s [%s] %s..%s", ind, s.name, s.kind, ms(s.start), ms(s.end))
		if s.link >= 0 {
			fmt.Fprintf(b, " link→%s@%s", spans[s.link].name, ms(spans[s.link].start))
		}
		if s.err != "" {
			fmt.Fprintf(b, " ERROR %q", s.err)
		}
		b.WriteString("\n")
		attrs := make([]string, 0, len(s.attrs))
		for _, a := range s.attrs {
			attrs = append(attrs, fmt.Sprintf("%s=%s", a.Key, a.Value.Emit()))
		}
		slices.Sort(attrs)
		for _, a := range attrs {
			fmt.Fprintf(b, "%s  | %s\n", ind, a)
		}
		for _, e := range s.events {
			fmt.Fprintf(b, "%s  * %s @%s", ind, e.name, ms(e.at))
			for _, a := range e.attrs {
				fmt.Fprintf(b, " %s=%s", a.Key, a.Value.Emit())
			}
			b.WriteString("\n")
		}
		renderTree(b, t0, spans, i, depth+1)
	}
}

// TestPlanInvariants holds for every event: one root first, parents
// before children, children within the root's time.
func TestPlanInvariants(t *testing.T) {
	for _, ev := range readEvents(t) {
		spans := plan(ev)
		if len(spans) == 0 || spans[0].parent != -1 {
			t.Fatalf("%s: no root first", ev.ID)
		}
		for i, s := range spans[1:] {
			if s.parent < 0 || s.parent > i {
				t.Errorf("%s: span %d %q has parent %d", ev.ID, i+1, s.name, s.parent)
			}
			if s.start.Before(ev.Start) || s.end.After(ev.End) || s.end.Before(s.start) {
				t.Errorf("%s: span %q %v..%v outside the connection %v..%v", ev.ID, s.name, s.start, s.end, ev.Start, ev.End)
			}
		}
	}
}

// TestPlanBounded: a connection with thousands of requests gives at most
// maxSpans spans and says how many it left out.
func TestPlanBounded(t *testing.T) {
	ev := &event.Event{ID: "x-1", Kind: event.KindHTTP, Start: time.Unix(0, 0), End: time.Unix(10, 0), Target: "a:80"}
	for i := range 1000 {
		ev.HTTP = append(ev.HTTP, event.HTTP{Method: "GET", URL: "http://a/", StartMS: float64(i), SendMS: 0.1, WaitMS: ptr(0.5), ReceiveMS: ptr(0.1)})
	}
	spans := plan(ev)
	if len(spans) != maxSpans {
		t.Fatalf("%d spans, want %d", len(spans), maxSpans)
	}
	want := 1 + 4*1000 - maxSpans
	for _, a := range spans[0].attrs {
		if a.Key == "inspectproxy.spans_dropped" {
			if int(a.Value.AsInt64()) != want {
				t.Errorf("spans_dropped %d, want %d", a.Value.AsInt64(), want)
			}
			return
		}
	}
	t.Error("no inspectproxy.spans_dropped on the root")
}

func ptr(v float64) *float64 { return &v }

// FuzzPlan: any event the reader accepts maps to a trace with its root
// first, parents before children, at most maxSpans spans, and no panic.
func FuzzPlan(f *testing.F) {
	data, err := os.ReadFile("testdata/events.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f.Add([]byte(line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := event.NewReader(strings.NewReader(string(line))).Next()
		if err != nil {
			return
		}
		spans := plan(ev)
		if len(spans) == 0 || len(spans) > maxSpans || spans[0].parent != -1 {
			t.Fatalf("%d spans, root parent %d", len(spans), spans[0].parent)
		}
		for i, s := range spans[1:] {
			if s.parent < 0 || s.parent > i || s.link > i || s.end.Before(s.start) {
				t.Fatalf("span %d %q: parent %d link %d, %v..%v", i+1, s.name, s.parent, s.link, s.start, s.end)
			}
		}
	})
}
