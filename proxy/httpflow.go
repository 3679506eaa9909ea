package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
)

// newGoproxy builds the goproxy instance for plain HTTP (and MITM). Each
// request goes through its client connection's own transport, so upstream
// connections belong to one client connection and their reuse and close
// are visible in its event.
func (s *Server) newGoproxy(m MITM) *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = zapPrintf{s.log.Named("goproxy").Sugar()}
	gp.Tr = nil // never used: every request gets ctx.RoundTripper below
	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		cc := clientConnFrom(r)
		if cc == nil { // a request decrypted by MITM: goproxy carried the CONNECT's state
			cc, _ = ctx.UserData.(*clientConn)
		}
		if cc == nil {
			return r, goproxy.NewResponse(r, goproxy.ContentTypeText, http.StatusInternalServerError, "inspectproxy: request without connection state")
		}
		ex := cc.startExchange(r)
		ctx.UserData = ex
		// Errors become a 502 here: goproxy's MITM loop would otherwise
		// close the client without a response.
		ctx.RoundTripper = goproxy.RoundTripperFunc(func(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
			resp, err := cc.roundTrip(req, ex)
			if err != nil {
				code := http.StatusBadGateway
				if errors.Is(err, timing.ErrDenied) {
					code = http.StatusForbidden
				}
				ex.fail(code, err.Error())
				return goproxy.NewResponse(req, goproxy.ContentTypeText, code, "inspectproxy: upstream failed: "+err.Error()+"\n"), nil
			}
			ex.gotResponse(resp)
			if resp.StatusCode == http.StatusSwitchingProtocols {
				// goproxy needs the body's io.ReadWriter for the upgraded
				// (WebSocket) stream; there is no receive phase to time.
				ex.done()
				return resp, nil
			}
			resp.Body = &timedBody{ReadCloser: resp.Body, ex: ex}
			return resp, nil
		})
		return r, nil
	})
	if m != nil {
		s.mitm = m
		s.setupMITM(gp, m)
	}
	return gp
}

type zapPrintf struct {
	l interface{ Debugf(string, ...any) }
}

func (z zapPrintf) Printf(format string, v ...any) { z.l.Debugf(format, v...) }

// exchange is one request and response, timed like HAR.
type exchange struct {
	cc *clientConn
	i  int // index in cc.ev.HTTP

	// mu guards the trace times: the transport calls them from its own
	// read and write goroutines.
	mu               sync.Mutex
	getConn, gotConn time.Duration
	wrote, firstByte time.Duration
	upstream         *upstreamConn
	reused           bool
	bytes            atomic.Int64
}

func (cc *clientConn) startExchange(r *http.Request) *exchange {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	ex := &exchange{cc: cc, i: len(cc.ev.HTTP), getConn: -1, gotConn: -1, wrote: -1, firstByte: -1}
	cc.ev.HTTP = append(cc.ev.HTTP, event.HTTP{Method: r.Method, URL: r.URL.String(), StartMS: timing.MS(cc.since())})
	return ex
}

// update edits this exchange's record under the connection's lock.
func (ex *exchange) update(f func(h *event.HTTP)) {
	ex.cc.mu.Lock()
	defer ex.cc.mu.Unlock()
	f(&ex.cc.ev.HTTP[ex.i])
}

func (ex *exchange) fail(status int, msg string) {
	ex.update(func(h *event.HTTP) { h.Error = msg; h.Status = status })
	ex.cc.setError(msg)
}

// set stamps one trace time.
func (ex *exchange) set(t *time.Duration) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	*t = ex.cc.since()
}

func (ex *exchange) gotResponse(resp *http.Response) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.update(func(h *event.HTTP) {
		h.Status = resp.StatusCode
		h.Proto = resp.Proto
		if ex.upstream != nil {
			h.UpstreamID = ex.upstream.id
		}
		h.Reused = ex.reused
		h.SendMS = timing.MS(max(ex.wrote-ex.gotConn, 0))
		h.WaitMS = timing.MSPtr(ex.firstByte - max(ex.wrote, 0))
		if ex.getConn >= 0 && ex.gotConn >= 0 {
			blocked := ex.gotConn - ex.getConn
			if !ex.reused && ex.upstream != nil {
				// The new connection's dial and TLS handshake are in their
				// own HAR phases (dns, connect, ssl), not in blocked.
				blocked -= ex.upstream.dial.ConnectedAt + ex.upstream.tlsTime
			}
			h.BlockedMS = timing.MSPtr(max(blocked, 0))
		}
	})
}

func (ex *exchange) done() {
	end := ex.cc.since()
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.update(func(h *event.HTTP) {
		h.Bytes = ex.bytes.Load()
		if ex.firstByte >= 0 {
			h.ReceiveMS = timing.MSPtr(end - ex.firstByte)
		}
	})
}

// timedBody marks the end of the receive phase when goproxy has copied
// the body to the client and closes it.
type timedBody struct {
	io.ReadCloser
	ex   *exchange
	once sync.Once
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.ex.bytes.Add(int64(n))
	return n, err
}

func (b *timedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.ex.done)
	return err
}

// roundTrip sends req upstream on this client connection's transport.
func (cc *clientConn) roundTrip(req *http.Request, ex *exchange) (*http.Response, error) {
	trace := &httptrace.ClientTrace{
		GetConn: func(string) { ex.set(&ex.getConn) },
		GotConn: func(info httptrace.GotConnInfo) {
			ex.mu.Lock()
			defer ex.mu.Unlock()
			ex.gotConn = cc.since()
			ex.reused = info.Reused
			conn := info.Conn
			if tc, ok := conn.(*tls.Conn); ok { // MITM's upstream
				conn = tc.NetConn()
			}
			ex.upstream, _ = conn.(*upstreamConn)
		},
		WroteRequest:         func(httptrace.WroteRequestInfo) { ex.set(&ex.wrote) },
		GotFirstResponseByte: func() { ex.set(&ex.firstByte) },
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	return cc.httpTransport().RoundTrip(req)
}

func (cc *clientConn) httpTransport() *http.Transport {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.transport == nil {
		lim := cc.s.cfg.Limits
		cc.transport = &http.Transport{
			Proxy:                 nil, // never chain to $HTTP_PROXY: we are the proxy
			DialContext:           cc.dialUpstream,
			DialTLSContext:        cc.dialTLSUpstream,
			DisableCompression:    true, // pass Accept-Encoding through untouched
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       lim.IdleTimeout,
			ResponseHeaderTimeout: lim.IdleTimeout,
			ForceAttemptHTTP2:     false,
		}
	}
	return cc.transport
}

// dialUpstream dials with timing and wraps the connection so its close is
// recorded.
func (cc *clientConn) dialUpstream(ctx context.Context, _, addr string) (net.Conn, error) {
	at := cc.since()
	d, err := cc.s.dialer.Dial(ctx, addr)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	u := &upstreamConn{cc: cc, id: len(cc.upstreams) + 1, target: addr, dial: d, dialAt: at}
	cc.upstreams = append(cc.upstreams, u)
	if err != nil {
		u.err = err.Error()
		u.closed, u.closedAt = true, cc.since()
		return nil, err
	}
	u.TCPConn = d.Conn
	return u, nil
}

// upstreamConn is an upstream connection of a plain-HTTP or MITM client
// connection. It counts bytes and notes who closed first.
type upstreamConn struct {
	*net.TCPConn
	cc     *clientConn
	id     int
	target string
	dial   *timing.Dialed
	dialAt time.Duration
	err    string
	tls    *event.TLS
	// tlsTime is the MITM upstream handshake's length.
	tlsTime time.Duration

	up, down atomic.Int64
	close    timing.Close
	mu       sync.Mutex
	closed   bool
	closedAt time.Duration
}

var _ net.Conn = (*upstreamConn)(nil)

func (u *upstreamConn) Read(p []byte) (int, error) {
	n, err := u.TCPConn.Read(p)
	u.down.Add(int64(n))
	switch {
	case err == io.EOF:
		u.close.FIN(event.SideServer, u.cc.since())
	case timing.IsReset(err):
		u.close.RST(event.SideServer)
	}
	return n, err
}

func (u *upstreamConn) Write(p []byte) (int, error) {
	n, err := u.TCPConn.Write(p)
	u.up.Add(int64(n))
	if timing.IsReset(err) {
		u.close.RST(event.SideServer)
	}
	return n, err
}

// Close is the proxy ending the connection: its FIN, unless the server's
// came first. The transport often closes a "Connection: close" response's
// connection without reading to the server's FIN, so the kernel is asked
// whether that FIN is already there (its time is then when it was noticed).
func (u *upstreamConn) Close() error {
	at := u.cc.since()
	if si, ok := timing.Info(u.TCPConn); ok && si.PeerFIN {
		u.close.FIN(event.SideServer, at)
	}
	u.close.FIN(event.SideProxy, at)
	u.mu.Lock()
	if !u.closed {
		u.closed, u.closedAt = true, at
	}
	u.mu.Unlock()
	return u.TCPConn.Close()
}

// finish returns the connection's record; an open one is closed first.
func (u *upstreamConn) finish() event.Upstream {
	if u.TCPConn != nil {
		u.mu.Lock()
		open := !u.closed
		u.mu.Unlock()
		if open {
			_ = u.Close()
		}
	}
	u.mu.Lock()
	end := u.closedAt
	u.mu.Unlock()
	d := u.dial
	if d == nil {
		d = &timing.Dialed{DNS: -1, Connect: -1}
	}
	tcp := tcpEvent(d, u.dialAt, &u.close, u.up.Load(), u.down.Load(), end-u.dialAt)
	return event.Upstream{ID: u.id, Target: u.target, TCP: tcp, TLS: u.tls, Error: u.err}
}

func (u *upstreamConn) String() string { return fmt.Sprintf("upstream %d %s", u.id, u.target) }
