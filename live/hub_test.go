package live

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inspectproxy/inspectproxy/event"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ids is a test encoder: the batch as "id:phase" strings.
func ids(changed []Conn) ([]byte, error) {
	var out []string
	for _, c := range changed {
		out = append(out, c.Event.ID+":"+string(c.Phase))
	}
	return json.Marshal(out)
}

func ev(id string) *event.Event { return &event.Event{ID: id, Target: "example.com:443"} }

func decode(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, s := range list {
		i := strings.LastIndexByte(s, ':')
		m[s[:i]] = s[i+1:]
	}
	return m
}

func TestNobodyWatching(t *testing.T) {
	h := NewHub(Options{History: 3, Encode: ids})
	if h.Active() {
		t.Fatal("active with no subscriber")
	}
	h.Publish(ClientHello, ev("a")) // dropped: nobody watches
	for _, id := range []string{"1", "2", "3", "4"} {
		h.Publish(Closed, ev(id))
	}
	sub, st := h.Subscribe()
	defer sub.Close()
	if !h.Active() {
		t.Fatal("not active with a subscriber")
	}
	var got []string
	for _, e := range st.Closed {
		got = append(got, e.ID)
	}
	if fmt.Sprint(got) != "[2 3 4]" || len(st.Open) != 0 {
		t.Fatalf("history %v, open %v: want the last 3 closed, oldest first, and nothing open", got, st.Open)
	}
	if _, ok := h.Find("a"); ok {
		t.Error("an open phase published while nobody watched was kept")
	}
}

func TestCoalescesPerConnection(t *testing.T) {
	h := NewHub(Options{Encode: ids, Interval: time.Hour})
	sub, _ := h.Subscribe()
	defer sub.Close()
	for _, p := range []Phase{Accepted, Connected, ClientHello} {
		h.Publish(p, ev("a"))
	}
	h.Publish(Accepted, ev("b"))
	h.Publish(Closed, ev("b"))
	if err := h.Flush(); err != nil {
		t.Fatal(err)
	}
	got := decode(t, <-sub.C)
	if len(got) != 2 || got["a"] != "client_hello" || got["b"] != "closed" {
		t.Fatalf("batch %v: want one entry per connection with its latest phase", got)
	}
	if c, ok := h.Find("a"); !ok || c.Phase != ClientHello {
		t.Errorf("Find(a) = %v %v", c, ok)
	}
	if c, ok := h.Find("b"); !ok || c.Phase != Closed {
		t.Errorf("Find(b) = %v %v", c, ok)
	}
	if err := h.Flush(); err != nil || len(sub.C) != 0 {
		t.Errorf("an empty flush sent a batch")
	}
}

// TestSlowSubscriberResyncs: a subscriber that does not read is dropped
// and counted, publishers never block, and Resync gives the whole state.
func TestSlowSubscriberResyncs(t *testing.T) {
	h := NewHub(Options{Encode: ids, Buffer: 2, Interval: time.Hour})
	slow, _ := h.Subscribe()
	defer slow.Close()
	fast, _ := h.Subscribe()
	defer fast.Close()
	for i := range 10 {
		h.Publish(Accepted, ev(fmt.Sprint(i)))
		if err := h.Flush(); err != nil {
			t.Fatal(err)
		}
		for len(fast.C) > 0 {
			<-fast.C
		}
	}
	if !slow.Lost() || fast.Lost() {
		t.Fatalf("slow lost %v, fast lost %v", slow.Lost(), fast.Lost())
	}
	if s := h.Stats(); s.Dropped != 1 || s.Subscribers != 2 {
		t.Errorf("stats %+v: want one drop, two subscribers", s)
	}
	for len(slow.C) > 0 {
		<-slow.C
	}
	st := slow.Resync()
	if slow.Lost() || len(st.Open) != 10 {
		t.Fatalf("after resync: lost %v, %d open, want 10", slow.Lost(), len(st.Open))
	}
	h.Publish(Closed, ev("3"))
	if err := h.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := decode(t, <-slow.C); got["3"] != "closed" {
		t.Errorf("after resync the slow subscriber got %v", got)
	}
}

// TestBatchBeforeSubscribeSkipped: a batch swapped out before a subscriber
// took its state is not sent to it (its state already holds it).
func TestBatchBeforeSubscribeSkipped(t *testing.T) {
	h := NewHub(Options{Encode: ids, Interval: time.Hour})
	first, _ := h.Subscribe()
	defer first.Close()
	h.Publish(Accepted, ev("a"))
	h.mu.Lock()
	h.gen++ // as flush does when it swaps the pending set out
	gen := h.gen
	h.mu.Unlock()
	late, st := h.Subscribe()
	defer late.Close()
	if len(st.Open) != 1 || late.from < gen {
		t.Fatalf("late subscriber: state %v, from %d (gen %d)", st.Open, late.from, gen)
	}
}

func TestMaxPendingResyncsEveryone(t *testing.T) {
	h := NewHub(Options{Encode: ids, MaxPending: 5, Interval: time.Hour})
	sub, _ := h.Subscribe()
	defer sub.Close()
	for i := range 6 {
		h.Publish(Accepted, ev(fmt.Sprint(i)))
	}
	if !sub.Lost() {
		t.Fatal("over MaxPending the subscriber should resync")
	}
	if len(h.pending) != 0 {
		t.Errorf("pending not cleared: %d", len(h.pending))
	}
}

func TestOpenSnapshotsOnFirstSubscriber(t *testing.T) {
	h := NewHub(Options{Encode: ids, Open: func() []Conn { return []Conn{{Phase: HandshakeDone, Event: ev("x")}} }})
	sub, st := h.Subscribe()
	if len(st.Open) != 1 || st.Open[0].Event.ID != "x" {
		t.Fatalf("open %v", st.Open)
	}
	sub.Close()
	if h.Active() || h.open != nil {
		t.Error("the last unsubscribe should drop the open set")
	}
	sub.Close() // twice is harmless
}

// TestRunUnderLoad publishes from many goroutines while Run flushes to a
// reader, under -race; the reader sees every connection's last phase.
func TestRunUnderLoad(t *testing.T) {
	h := NewHub(Options{Encode: ids, Interval: 5 * time.Millisecond, Buffer: 1024})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	sub, _ := h.Subscribe()
	seen := map[string]string{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				e := ev(fmt.Sprintf("%d-%d", g, i))
				for _, p := range []Phase{Accepted, ClientHello, Closed} {
					h.Publish(p, e)
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.After(10 * time.Second)
	for len(seen) < 1600 {
		select {
		case b := <-sub.C:
			for id, ph := range decode(t, b) {
				seen[id] = ph
			}
		case <-deadline:
			t.Fatalf("saw %d of 1600 connections", len(seen))
		}
	}
	for id, ph := range seen {
		if ph != "closed" {
			t.Fatalf("%s last seen %s", id, ph)
		}
	}
	sub.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func BenchmarkPublishNobodyWatching(b *testing.B) {
	h := NewHub(Options{Encode: ids})
	e := ev("a")
	for b.Loop() {
		if h.Active() {
			h.Publish(ClientHello, e)
		}
		h.Publish(Closed, e)
	}
}
