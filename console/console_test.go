package console

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/live"
)

// The proxy's process-wide reset watcher outlives the tests by design.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testtool.IgnoreRSTWatch)
}

// sample are the report package's sample events: tunnels, http, mitm,
// resets, a refused connect, ATS verdicts.
func sample(t testing.TB) []*event.Event {
	t.Helper()
	var evs []*event.Event
	for _, p := range []string{"../report/testdata/events.jsonl", "../ats/testdata/events.jsonl"} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		r := event.NewReader(f)
		for {
			ev, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err == nil {
				evs = append(evs, ev)
			}
		}
		f.Close()
	}
	return evs
}

// running is a console on a loopback port with its hub flushing.
type running struct {
	hub  *live.Hub
	srv  *Server
	addr string
	csrf string
}

func start(t testing.TB, o Options) *running {
	t.Helper()
	if o.Hub == nil {
		o.Hub = live.NewHub(live.Options{Encode: Encode, Interval: 20 * time.Millisecond})
	}
	o.Log = zap.NewNop()
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", o.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = o.Hub.Run(ctx); done <- struct{}{} }()
	go func() { _ = srv.Serve(ctx, ln); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return &running{hub: o.Hub, srv: srv, addr: ln.Addr().String(), csrf: srv.csrf}
}

func get(t testing.TB, url string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestGuard: the DNS-rebinding, CSRF, client and token rules, over real
// sockets.
func TestGuard(t *testing.T) {
	r := start(t, Options{})
	_, port, _ := net.SplitHostPort(r.addr)
	wrong := "0" + r.csrf[1:]
	if wrong == r.csrf {
		wrong = "1" + r.csrf[1:]
	}
	base := "http://" + r.addr
	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
		want       int
	}{
		{"page", "/", nil, 200},
		{"page via localhost", "/", map[string]string{"Host": "localhost:" + port}, 200},
		{"rebinding name", "/", map[string]string{"Host": "attacker.example:" + port}, 403},
		{"rebinding name without port", "/", map[string]string{"Host": "attacker.example"}, 403},
		{"other port", "/", map[string]string{"Host": "127.0.0.1:1"}, 403},
		{"asset", "/static/app.js", nil, 200},
		{"no directory listing", "/static/", nil, 404},
		{"stream without token", "/api/stream", nil, 403},
		{"detail without token", "/api/conn/x", nil, 403},
		{"detail with token", "/api/conn/x", map[string]string{csrfHeader: r.csrf}, 404},
		{"detail with a wrong token", "/api/conn/x", map[string]string{csrfHeader: wrong}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"Origin": "http://attacker.example"}
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			resp := get(t, base+tc.path, hdr)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			for k := range resp.Header {
				if strings.HasPrefix(k, "Access-Control-") {
					t.Errorf("CORS header %s sent", k)
				}
			}
			if resp.Header.Get("Content-Security-Policy") == "" {
				t.Error("no CSP")
			}
		})
	}
	// The page carries the per-process token, which the API wants.
	b, _ := io.ReadAll(get(t, base+"/", nil).Body)
	if !strings.Contains(string(b), `content="`+r.csrf+`"`) {
		t.Error("the page lacks the token")
	}
	// Exports change nothing but give data away: POST with the token only.
	resp, err := http.Post(base+"/api/export?format=jsonl", "application/json", strings.NewReader(`{"ids":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("export without token: %d", resp.StatusCode)
	}
}

func TestDisallowedClient(t *testing.T) {
	r := start(t, Options{Allow: func(netip.Addr) bool { return false }})
	if resp := get(t, "http://"+r.addr+"/", nil); resp.StatusCode != 403 {
		t.Errorf("status %d, want 403", resp.StatusCode)
	}
}

func TestUIToken(t *testing.T) {
	r := start(t, Options{Token: "s3cret"})
	base := "http://" + r.addr
	if resp := get(t, base+"/", nil); resp.StatusCode != 401 {
		t.Fatalf("no token: %d, want 401", resp.StatusCode)
	}
	if resp := get(t, base+"/?token=wrong", nil); resp.StatusCode != 401 {
		t.Fatalf("wrong token: %d, want 401", resp.StatusCode)
	}
	resp := get(t, base+"/?token=s3cret", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("token in the URL: %d to %q, want a redirect to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := resp.Cookies()
	if len(c) != 1 || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %v", c)
	}
	if resp := get(t, base+"/", map[string]string{"Cookie": c[0].Name + "=" + c[0].Value}); resp.StatusCode != 200 {
		t.Errorf("with the cookie: %d", resp.StatusCode)
	}
	if resp := get(t, base+"/", map[string]string{"Authorization": "Bearer s3cret"}); resp.StatusCode != 200 {
		t.Errorf("with a bearer token: %d", resp.StatusCode)
	}
}

func TestListenRule(t *testing.T) {
	if _, err := Listen("0.0.0.0:0", ""); !errors.Is(err, ErrNeedsToken) {
		t.Errorf("0.0.0.0 without a token: %v", err)
	}
	ln, err := Listen("0.0.0.0:0", "t")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	// A taken port is a plain error the caller can tell (serve goes on).
	ln, _ = Listen("127.0.0.1:0", "")
	defer ln.Close()
	if _, err := Listen(ln.Addr().String(), ""); err == nil {
		t.Error("listening twice on one port worked")
	}
}

// sse reads Server-Sent Events.
type sse struct {
	r    *bufio.Reader
	body io.Closer
}

func openStream(t testing.TB, r *running) *sse {
	t.Helper()
	resp := get(t, "http://"+r.addr+"/api/stream?k="+r.csrf, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sse{r: bufio.NewReader(resp.Body), body: resp.Body}
}

// next returns the next event named name, skipping others.
func (s *sse) next(t testing.TB, name string) []byte {
	t.Helper()
	var ev string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			ev = line[len("event: "):]
		case strings.HasPrefix(line, "data: ") && ev == name:
			return []byte(line[len("data: "):])
		}
	}
}

func TestStream(t *testing.T) {
	hub := live.NewHub(live.Options{Encode: Encode, Interval: 20 * time.Millisecond})
	evs := sample(t)
	hub.Preload(evs)
	r := start(t, Options{Hub: hub})
	s := openStream(t, r)
	defer s.body.Close()
	var b batch
	if err := json.Unmarshal(s.next(t, "rows"), &b); err != nil {
		t.Fatal(err)
	}
	if !b.Reset || len(b.Rows) != len(evs) || b.Rows[0].ID != evs[0].ID {
		t.Fatalf("reset: %v with %d rows, want the %d events of the history", b.Reset, len(b.Rows), len(evs))
	}
	open := &event.Event{ID: "live-1", Start: time.Now(), Client: "127.0.0.1:5", Target: "example.com:443", Kind: event.KindTunnel,
		TLS: &event.TLS{Version: "TLS 1.3", ClientHello: &event.ClientHello{ALPN: []string{"h2", "http/1.1"}}}}
	hub.Publish(live.ClientHello, open)
	b = batch{}
	if err := json.Unmarshal(s.next(t, "rows"), &b); err != nil {
		t.Fatal(err)
	}
	if b.Reset || len(b.Rows) != 1 {
		t.Fatalf("batch %+v", b)
	}
	got := b.Rows[0]
	if !got.Open || got.Phase != "client_hello" || got.TLS != "TLS 1.3" || got.ALPN != "h2,http/1.1" || !got.Offered {
		t.Errorf("row %+v", got)
	}
	// The detail API serves the snapshot with its story.
	resp := get(t, "http://"+r.addr+"/api/conn/live-1", map[string]string{csrfHeader: r.csrf})
	var d struct {
		Phase string `json:"phase"`
		Story []Step `json:"story"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || d.Phase != "client_hello" || len(d.Story) == 0 {
		t.Errorf("detail %+v %v", d, err)
	}
	if st := hub.Stats(); st.Subscribers != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestExport(t *testing.T) {
	hub := live.NewHub(live.Options{Encode: Encode})
	evs := sample(t)
	hub.Preload(evs)
	r := start(t, Options{Hub: hub})
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	body, _ := json.Marshal(map[string]any{"ids": ids[:5]})
	for _, tc := range []struct {
		format, want string
	}{
		{"jsonl", `"id":"` + ids[0] + `"`},
		{"har", `"version": "1.2"`},
		{"html", "<svg"},
		{"ats", "ATS report: 5 connections"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+"/api/export?format="+tc.format, strings.NewReader(string(body)))
			req.Header.Set(csrfHeader, r.csrf)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(b), tc.want) {
				t.Fatalf("status %d, body lacks %q:\n%.300s", resp.StatusCode, tc.want, b)
			}
			if !regexp.MustCompile(`^attachment; filename="inspectproxy-\d{8}-\d{6}\.\w+"$`).MatchString(resp.Header.Get("Content-Disposition")) {
				t.Errorf("Content-Disposition %q", resp.Header.Get("Content-Disposition"))
			}
			if tc.format == "jsonl" && strings.Count(string(b), "\n") != 5 {
				t.Errorf("%d lines, want 5", strings.Count(string(b), "\n"))
			}
		})
	}
}

func TestReadHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := json.NewEncoder(f)
	// Big enough that the tail spans several of ReadHistory's chunks.
	pad := strings.Repeat("x", 2000)
	for i := range 1000 {
		if err := w.Encode(&event.Event{ID: fmt.Sprint(i), Kind: event.KindTunnel, Error: pad}); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprint(f, `{"id":"torn","kind":"tun`) // a crash mid-write
	f.Close()
	for _, n := range []int{1, 10, 500, 5000} {
		evs, err := ReadHistory(path, n)
		if err != nil {
			t.Fatal(err)
		}
		want := min(n, 1000)
		if len(evs) != want || evs[len(evs)-1].ID != "999" || evs[0].ID != fmt.Sprint(1000-want) {
			t.Errorf("n=%d: %d events, %s..%s", n, len(evs), evs[0].ID, evs[len(evs)-1].ID)
		}
	}
	if evs, err := ReadHistory(filepath.Join(t.TempDir(), "none"), 10); err != nil || evs != nil {
		t.Errorf("missing file: %v %v", evs, err)
	}
}

// BenchmarkStreamPerConnection is the console's CPU per connection with
// one subscriber: eight phase snapshots published (the proxy's side) and
// the connection's row encoded once per flush (the hub's side), flushing
// every 100 connections as at 1,000 connections/s.
func BenchmarkStreamPerConnection(b *testing.B) {
	hub := live.NewHub(live.Options{Encode: Encode, Buffer: 1 << 20})
	sub, _ := hub.Subscribe()
	defer sub.Close()
	go func() {
		for range sub.C {
		}
	}()
	tmpl := *find(b, sample(b), "c0020")
	phases := []live.Phase{live.Accepted, live.Connected, live.ClientHello, live.ServerHello, live.HandshakeDone, live.HTTP, live.FirstFIN, live.Closed}
	i := 0
	for b.Loop() {
		ev := tmpl
		ev.ID = strconv.Itoa(i)
		for _, p := range phases {
			snap := ev // the proxy's snapshot: a copy of the event
			hub.Publish(p, &snap)
		}
		if i++; i%100 == 0 {
			if err := hub.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
