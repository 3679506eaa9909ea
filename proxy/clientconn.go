package proxy

import (
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
)

// clientConn is one client connection to the proxy while it carries plain
// HTTP (or is refused); a CONNECT hands it to a tunnel.
type clientConn struct {
	s     *Server
	conn  net.Conn
	start time.Time
	log   *zap.Logger

	mu        sync.Mutex
	ev        event.Event
	transport *http.Transport
	upstreams []*upstreamConn
	opened    bool // the observer was told
	hasSlot   bool // holds one of limits.max_connections
	// clientHello is the client's side of a MITM handshake.
	clientHello *event.TLS
	once        sync.Once
}

func (s *Server) newClientConn(c net.Conn) *clientConn {
	cc := &clientConn{s: s, conn: c, start: time.Now()}
	cc.ev = event.Event{ID: s.newID(), Start: cc.start.UTC(), Client: c.RemoteAddr().String(), Kind: event.KindHTTP}
	cc.log = s.log.With(zap.String("id", cc.ev.ID), zap.String("client", cc.ev.Client))
	return cc
}

// since is the time since accept, the zero of every _ms field.
func (cc *clientConn) since() time.Duration { return time.Since(cc.start) }

func (cc *clientConn) setKind(kind, target string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.ev.Kind = kind
	if cc.ev.Target == "" {
		cc.ev.Target = target
	}
	cc.markOpened()
}

// markOpened tells the observer once, with the connection's kind; cc.mu held.
func (cc *clientConn) markOpened() {
	if !cc.opened && cc.s.observer != nil {
		cc.s.observer.ConnOpened(cc.ev.Kind)
	}
	cc.opened = true
}

func (cc *clientConn) setError(msg string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.ev.Error == "" {
		cc.ev.Error = msg
	}
}

// refuse answers a request the proxy will not serve and closes the
// connection after it; the event keeps the reason.
func (cc *clientConn) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	kind := event.KindHTTP
	if r.Method == http.MethodConnect {
		kind = event.KindTunnel
	}
	cc.setKind(kind, r.Host)
	cc.setError(msg)
	cc.log.Info("refused", zap.String("target", r.Host), zap.Int("status", code), zap.String("reason", msg))
	if code == http.StatusProxyAuthRequired {
		w.Header().Set("Proxy-Authenticate", `Basic realm="inspectproxy"`)
	}
	w.Header().Set("Connection", "close")
	http.Error(w, "inspectproxy: "+msg, code)
}

// closed runs when the HTTP server closes the client connection: the
// upstream connections it used are closed and the event is written.
func (cc *clientConn) closed() {
	cc.once.Do(func() {
		cc.mu.Lock()
		tr := cc.transport
		cc.mu.Unlock()
		if tr != nil {
			tr.CloseIdleConnections()
		}
		cc.mu.Lock()
		cc.markOpened()
		ev := cc.ev
		for i, u := range cc.upstreams {
			up := u.finish()
			ev.Upstreams = append(ev.Upstreams, up)
			if i == 0 {
				ev.TCP = &ev.Upstreams[0].TCP
			}
		}
		ev.TLS = mitmTLS(cc.clientHello, ev.Upstreams)
		cc.mu.Unlock()
		ev.End = time.Now().UTC()
		cc.s.emit(&ev, cc.log.With(zap.String("target", ev.Target)))
		if cc.hasSlot {
			cc.s.release()
		}
	})
}

func checkProxyAuth(r *http.Request, user, pass string) bool {
	h := r.Header.Get("Proxy-Authorization")
	const prefix = "Basic "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(h[len(prefix):])
	if err != nil {
		return false
	}
	u, p, ok := strings.Cut(string(raw), ":")
	return ok && subtle.ConstantTimeCompare([]byte(u), []byte(user)) == 1 &&
		subtle.ConstantTimeCompare([]byte(p), []byte(pass)) == 1
}

// tcpEvent fills an event.TCP from a dial and a close record.
func tcpEvent(d *timing.Dialed, dialStart time.Duration, cl *timing.Close, up, down int64, end time.Duration) event.TCP {
	t := event.TCP{
		DNSMS:      timing.MSPtr(d.DNS),
		ConnectMS:  timing.MSPtr(d.Connect),
		BytesUp:    up,
		BytesDown:  down,
		DurationMS: timing.MS(end),
	}
	if d.Remote.IsValid() {
		t.RemoteAddr = d.Remote.String()
		t.ConnectAt = timing.MS(dialStart + d.ConnectedAt)
	}
	snap := cl.Snapshot()
	t.FirstFIN, t.RST, t.Timeout = snap.FirstFIN, snap.RST, snap.Timeout
	if v, ok := snap.FIN[event.SideClient]; ok {
		t.ClientFINMS = timing.MSPtr(v)
	} else if v, ok := snap.FIN[event.SideProxy]; ok {
		t.ClientFINMS = timing.MSPtr(v)
	}
	if v, ok := snap.FIN[event.SideServer]; ok {
		t.ServerFINMS = timing.MSPtr(v)
	}
	if snap.HalfClose >= 0 {
		t.HalfCloseMS = timing.MSPtr(snap.HalfClose)
	}
	return t
}

// mitmTLS is a decrypted connection's tls object: the server's handshake as
// the proxy made it (what ATS judges), with the client's ClientHello and
// fingerprints from the client's own handshake with the proxy.
func mitmTLS(client *event.TLS, ups []event.Upstream) *event.TLS {
	var t *event.TLS
	for _, u := range ups {
		if u.TLS != nil {
			c := *u.TLS
			t = &c
			break
		}
	}
	switch {
	case t == nil:
		return client
	case client != nil:
		t.SNI, t.ClientHello, t.JA3, t.JA3Hash, t.JA4 = client.SNI, client.ClientHello, client.JA3, client.JA3Hash, client.JA4
	}
	return t
}
