// Package console is inspectproxy's live web console: a page, embedded in
// the binary and loading nothing from the network, that lists connections
// as they open and progress (from a live.Hub, over Server-Sent Events),
// filters them, draws one connection's TCP and TLS story as a sequence
// diagram, and exports what it shows.
//
// A console on loopback is still reachable by every web page its user
// opens, so the server answers only requests whose Host is its own address
// (no DNS rebinding), sends no CORS headers, and wants a per-process token,
// which only its own page knows, for anything that returns connection
// data. Off loopback it also wants ui.token, and the proxy's access rules.
package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/live"
)

// ErrNeedsToken is returned by Listen for an address other hosts can reach
// when no ui.token is set.
var ErrNeedsToken = errors.New("console: refusing to serve the console beyond loopback without ui.token")

//go:embed web
var webFS embed.FS

// Options are what a console serves.
type Options struct {
	Hub *live.Hub
	Log *zap.Logger
	// Token is ui.token: when set, every request must carry it (the
	// console URL printed at start has it; the page keeps it in a cookie).
	Token string
	// Allow reports whether a client may use the console: loopback, or
	// the proxy's access rules. Nil allows loopback only.
	Allow func(netip.Addr) bool
	// App, optional, is the app's ATS policy (ats.plist), for the ATS
	// advice and export.
	App *ats.AppPolicy
	// Version names the build in exports.
	Version string
	// Setup, optional, is the phone setup page (onboard.Handler), served
	// at /setup/ so that its QR code can be scanned off this screen.
	Setup http.Handler
	// History is the ui.history the page keeps at most (rows past it are
	// dropped oldest first, as the hub drops them). Default 10000.
	History int
}

// Server is the console's HTTP side.
type Server struct {
	o    Options
	csrf string // per-process token, known only to pages this server served
	page *template.Template
}

// New returns a console server.
func New(o Options) (*Server, error) {
	if o.Hub == nil || o.Log == nil {
		return nil, errors.New("console: Options.Hub and Options.Log are required")
	}
	if o.History <= 0 {
		o.History = 10000
	}
	page, err := template.ParseFS(webFS, "web/index.html")
	if err != nil {
		return nil, fmt.Errorf("console: page: %w", err)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return &Server{o: o, csrf: hex.EncodeToString(b), page: page}, nil
}

// Listen opens the console's listener. Without a token the address bound
// must be loopback (ErrNeedsToken), like the proxy's open-proxy rule; it is
// the address bound that is checked, since a name may resolve anywhere.
func Listen(addr, token string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("console: ui.listen %q: %w", addr, err)
	}
	if token == "" && !access.BoundLoopback(ln.Addr()) {
		ln.Close()
		return nil, fmt.Errorf("%w: ui.listen %q bound %s; set ui.token or listen on 127.0.0.1", ErrNeedsToken, addr, ln.Addr())
	}
	return ln, nil
}

// URL is the console's address for a person to open: with the token when
// one is set (the page then keeps it in a cookie and drops it from the
// address bar).
func URL(addr net.Addr, token string) string {
	u := "http://" + addr.String() + "/"
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil && ap.Addr().IsLoopback() && ap.Addr().Is4() {
		u = "http://127.0.0.1:" + strconv.Itoa(int(ap.Port())) + "/"
	}
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	return u
}

// Timeouts of the console's server. The event stream is long-lived, so
// there is no whole-response write timeout; each write has its own.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = time.Minute
	writeTimeout      = 10 * time.Second
	shutdownTimeout   = 2 * time.Second
)

// Serve serves the console on ln until ctx ends, then closes open streams.
// It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(ln.Addr()),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          zap.NewStdLog(s.o.Log),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("console: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

// Handler is the console for a listener at addr: the Host and client
// checks, then the page, its assets and the API.
func (s *Server) Handler(addr net.Addr) http.Handler {
	static, _ := fs.Sub(webFS, "web")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	mux.Handle("GET /static/", http.StripPrefix("/static/", noIndex(http.FileServerFS(static))))
	mux.HandleFunc("GET /api/stream", s.withCSRF(s.stream))
	mux.HandleFunc("GET /api/conn/{id}", s.withCSRF(s.conn))
	mux.HandleFunc("POST /api/export", s.withCSRF(s.export))
	if s.o.Setup != nil {
		mux.Handle("GET /setup/", http.StripPrefix("/setup", s.o.Setup))
	}
	port := 0
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		port = int(ap.Port())
	}
	return s.guard(port, mux)
}

// guard refuses what the console must not answer, before any handler:
// another Host (DNS rebinding), a client the access rules refuse, a
// missing ui.token. It also sets the headers every answer carries.
func (s *Server) guard(port int, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !hostOK(r.Host, port) {
			http.Error(w, fmt.Sprintf("inspectproxy console: Host %q is not this console's address; open it by IP address or localhost (DNS rebinding protection)", r.Host), http.StatusForbidden)
			return
		}
		if !s.clientOK(r.RemoteAddr) {
			http.Error(w, fmt.Sprintf("inspectproxy console: client %s is not in access.allow_clients", r.RemoteAddr), http.StatusForbidden)
			return
		}
		if s.o.Token != "" && !s.tokenOK(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostOK accepts localhost or an IP literal, at the console's port: a name
// that resolves to this machine could be an attacker's (DNS rebinding),
// an address cannot.
func hostOK(hostport string, port int) bool {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil || p != strconv.Itoa(port) {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	_, err = netip.ParseAddr(host)
	return err == nil
}

func (s *Server) clientOK(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	if s.o.Allow != nil {
		return s.o.Allow(a)
	}
	return a.IsLoopback()
}

const tokenCookie = "inspectproxy_ui"

// tokenOK checks ui.token: from the cookie, a Bearer header, or the URL
// printed at start (then it is moved into a cookie and out of the URL).
func (s *Server) tokenOK(w http.ResponseWriter, r *http.Request) bool {
	if q := r.URL.Query().Get("token"); q != "" && equal(q, s.o.Token) && r.Method == http.MethodGet && r.URL.Path == "/" {
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: s.o.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return false
	}
	if c, err := r.Cookie(tokenCookie); err == nil && equal(c.Value, s.o.Token) {
		return true
	}
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && equal(b, s.o.Token) {
		return true
	}
	http.Error(w, "inspectproxy console: ui.token required: open the console URL that inspectproxy printed at start", http.StatusUnauthorized)
	return false
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// csrfHeader carries the per-process token; EventSource, which cannot set
// headers, sends it as the k query parameter.
const csrfHeader = "X-Inspectproxy-Token"

// withCSRF wants the per-process token: only a page this server served
// knows it, so another site's page cannot read or export connections.
func (s *Server) withCSRF(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := r.Header.Get(csrfHeader)
		if t == "" {
			t = r.URL.Query().Get("k")
		}
		if !equal(t, s.csrf) {
			http.Error(w, "inspectproxy console: missing or wrong "+csrfHeader, http.StatusForbidden)
			return
		}
		next(w, r)
	}
}

func noIndex(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") || r.URL.Path == "index.html" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	err := s.page.Execute(w, map[string]any{
		"CSRF": s.csrf, "Version": s.o.Version, "Setup": s.o.Setup != nil, "History": s.o.History,
	})
	if err != nil {
		s.o.Log.Debug("console page", zap.Error(err))
	}
}

// stream is the live list over Server-Sent Events: a reset with every row,
// then a batch per flush, stats every second, and a new reset after the
// client fell behind and the hub dropped it.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	sub, st := s.o.Hub.Subscribe()
	defer sub.Close()
	send := func(name string, data []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	reset := func(st live.State) bool {
		b, err := encodeState(st)
		if err != nil {
			s.o.Log.Error("console: encode", zap.Error(err))
			return false
		}
		return send("rows", b)
	}
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil || !reset(st) {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case msg, ok := <-sub.C:
			if !ok || !send("rows", msg) {
				return
			}
		case <-tick.C:
			if sub.Lost() {
				for len(sub.C) > 0 {
					<-sub.C
				}
				if !reset(sub.Resync()) {
					return
				}
			}
			b, _ := json.Marshal(s.o.Hub.Stats())
			if !send("stats", b) {
				return
			}
		}
	}
}

// detail is one connection for the detail view.
type detail struct {
	Phase  live.Phase `json:"phase"`
	Event  any        `json:"event"`
	Story  []Step     `json:"story"`
	Advice []Advice   `json:"ats_advice,omitempty"`
}

func (s *Server) conn(w http.ResponseWriter, r *http.Request) {
	c, ok := s.o.Hub.Find(r.PathValue("id"))
	if !ok {
		http.Error(w, "inspectproxy console: no such connection (it may have left the history)", http.StatusNotFound)
		return
	}
	d := detail{Phase: c.Phase, Event: c.Event, Story: Story(c.Event)}
	if c.Event.ATS != nil && c.Event.ATS.Compliant != "yes" {
		d.Advice = advise(c.Event, s.o.App)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(d)
}

// maxExportBody bounds the list of ids an export names.
const maxExportBody = 8 << 20

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("format")
	f, ok := formats[name]
	if !ok {
		http.Error(w, fmt.Sprintf("inspectproxy console: export format %q: want jsonl, har, html or ats", name), http.StatusBadRequest)
		return
	}
	var body struct {
		IDs []string `json:"ids"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxExportBody)).Decode(&body); err != nil {
		http.Error(w, "inspectproxy console: export body: "+err.Error(), http.StatusBadRequest)
		return
	}
	ids := make(map[string]bool, len(body.IDs))
	for _, id := range body.IDs {
		ids[id] = true
	}
	evs := s.o.Hub.Select(ids)
	if len(evs) == 0 {
		http.Error(w, "inspectproxy console: nothing to export: none of the connections shown is still held (ui.history)", http.StatusBadRequest)
		return
	}
	// Built whole before the first byte, so a failure is an error status
	// rather than a cut file.
	var out bytes.Buffer
	if err := export(&out, name, evs, s.o.App, s.o.Version); err != nil {
		s.o.Log.Warn("console: export", zap.String("format", name), zap.Error(err))
		http.Error(w, "inspectproxy console: export: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="inspectproxy-%s.%s"`, time.Now().Format("20060102-150405"), f.ext))
	_, _ = out.WriteTo(w)
}
