package report

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
)

// harTunnelNote is the log comment telling HAR readers what a CONNECT entry
// means, since HAR was made for requests, not tunnels.
const harTunnelNote = "CONNECT entries are passthrough tunnels: blocked is accept to dial, connect runs from dial to TLS done " +
	"(TCP connect, the proxy's 200 and the TLS handshake, ssl included), send to the client's first application data, " +
	"wait to the server's first application data after it, receive to the end of the tunnel; bodySize is the bytes tunnelled"

// WriteHAR streams the events in r to w as a HAR 1.2 log: one entry per
// http or mitm request and one CONNECT entry per passthrough tunnel, in the
// events' order (connections are logged when they close), each written as
// its event is read.
//
// Timings follow HAR 1.2: ssl is included in connect; blocked, dns, connect
// and ssl are -1 when they do not apply (a reused connection, an IP literal,
// no TLS); send, wait and receive, which HAR requires, are 0 when not
// measured. time is the sum of the timings but ssl.
func WriteHAR(w io.Writer, r io.Reader, opts Options) error {
	bw := bufio.NewWriter(w)
	creator, err := json.MarshalIndent(harCreator{Name: "inspectproxy", Version: cmp.Or(opts.Version, "unknown")}, "    ", "  ")
	if err != nil {
		return fmt.Errorf("report: har creator: %w", err)
	}
	fmt.Fprintf(bw, "{\n  \"log\": {\n    \"version\": \"1.2\",\n    \"creator\": %s,\n    \"entries\": [", creator)
	n := 0
	entry := func(e *harEntry) error {
		b, err := gojson.MarshalIndent(e, "      ", "  ")
		if err != nil {
			return fmt.Errorf("report: har entry: %w", err)
		}
		sep := ",\n      "
		if n == 0 {
			sep = "\n      "
		}
		n++
		bw.WriteString(sep)
		_, err = bw.Write(b)
		return err
	}
	st, err := scan(r, opts, true, func(ev *event.Event) error {
		if ev.Kind == event.KindTunnel {
			return entry(tunnelEntry(ev))
		}
		for i := range ev.HTTP {
			if err := entry(httpEntry(ev, &ev.HTTP[i])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	comment := harTunnelNote
	if st.malformed > 0 {
		comment += fmt.Sprintf("; %d malformed event lines skipped, the first: %v", st.malformed, st.firstMalformed)
	}
	c, err := json.Marshal(comment)
	if err != nil {
		return fmt.Errorf("report: har comment: %w", err)
	}
	if n > 0 {
		bw.WriteString("\n    ")
	}
	fmt.Fprintf(bw, "],\n    \"comment\": %s\n  }\n}\n", c)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("report: write har: %w", err)
	}
	return nil
}

type harCreator struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type harEntry struct {
	StartedDateTime time.Time   `json:"startedDateTime"`
	Time            float64     `json:"time"`
	Request         harRequest  `json:"request"`
	Response        harResponse `json:"response"`
	Cache           struct{}    `json:"cache"`
	Timings         harTimings  `json:"timings"`
	ServerIPAddress string      `json:"serverIPAddress,omitempty"`
	Connection      string      `json:"connection,omitempty"`
	Comment         string      `json:"comment,omitempty"`
}

type harRequest struct {
	Method      string  `json:"method"`
	URL         string  `json:"url"`
	HTTPVersion string  `json:"httpVersion"`
	Cookies     []harNV `json:"cookies"`
	Headers     []harNV `json:"headers"`
	QueryString []harNV `json:"queryString"`
	HeadersSize int64   `json:"headersSize"`
	BodySize    int64   `json:"bodySize"`
}

type harResponse struct {
	Status      int        `json:"status"`
	StatusText  string     `json:"statusText"`
	HTTPVersion string     `json:"httpVersion"`
	Cookies     []harNV    `json:"cookies"`
	Headers     []harNV    `json:"headers"`
	Content     harContent `json:"content"`
	RedirectURL string     `json:"redirectURL"`
	HeadersSize int64      `json:"headersSize"`
	BodySize    int64      `json:"bodySize"`
}

type harContent struct {
	Size     int64  `json:"size"`
	MimeType string `json:"mimeType"`
}

type harNV struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type harTimings struct {
	Blocked float64 `json:"blocked"`
	DNS     float64 `json:"dns"`
	Connect float64 `json:"connect"`
	Send    float64 `json:"send"`
	Wait    float64 `json:"wait"`
	Receive float64 `json:"receive"`
	SSL     float64 `json:"ssl"`
}

// finish rounds the timings to microseconds, as the events are, and sets
// entry.time to their sum without ssl, which connect already holds.
func (e *harEntry) finish() *harEntry {
	t := &e.Timings
	for _, v := range []*float64{&t.Blocked, &t.DNS, &t.Connect, &t.Send, &t.Wait, &t.Receive, &t.SSL} {
		*v = roundUS(*v)
	}
	e.Time = 0
	for _, v := range []float64{t.Blocked, t.DNS, t.Connect, t.Send, t.Wait, t.Receive} {
		e.Time += max(v, 0)
	}
	e.Time = roundUS(e.Time)
	return e
}

func roundUS(v float64) float64 { return math.Round(v*1000) / 1000 }

// orNA is a measured value, or HAR's -1 for "does not apply".
func orNA(v *float64) float64 {
	if v == nil {
		return -1
	}
	return *v
}

// orZero is a measured value, or 0 where HAR has no "unknown".
func orZero(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}

func newEntry(start time.Time, method, u, proto string) *harEntry {
	return &harEntry{
		StartedDateTime: start.UTC(),
		Request: harRequest{
			Method: method, URL: u, HTTPVersion: proto,
			Cookies: []harNV{}, Headers: []harNV{}, QueryString: queryString(u),
			HeadersSize: -1, BodySize: -1,
		},
		Response: harResponse{
			HTTPVersion: proto, Cookies: []harNV{}, Headers: []harNV{},
			HeadersSize: -1, BodySize: -1,
		},
		Timings: harTimings{Blocked: -1, DNS: -1, Connect: -1, SSL: -1},
	}
}

// harHeaders is an event's header fields as HAR name-value pairs (secrets
// already redacted by the proxy).
func harHeaders(hs []event.Header) []harNV {
	out := make([]harNV, len(hs))
	for i, h := range hs {
		out[i] = harNV{Name: h.Name, Value: h.Value}
	}
	return out
}

// httpEntry is the entry of one http or mitm request.
func httpEntry(ev *event.Event, rq *event.HTTP) *harEntry {
	up := upstream(ev, rq.UpstreamID)
	e := newEntry(ev.Start.Add(msDuration(rq.StartMS)), rq.Method, absURL(ev, up, rq.URL), rq.Proto)
	e.Comment = rq.Error
	if len(rq.RequestHeaders) > 0 {
		e.Request.Headers, e.Request.HeadersSize = harHeaders(rq.RequestHeaders), rq.RequestHeadersSize
	}
	if rq.RequestBodySize > 0 {
		e.Request.BodySize = rq.RequestBodySize
	}
	if len(rq.ResponseHeaders) > 0 {
		e.Response.Headers, e.Response.HeadersSize = harHeaders(rq.ResponseHeaders), rq.ResponseHeadersSize
	}
	if rq.Status != 0 {
		e.Response.Status = rq.Status
		e.Response.StatusText = http.StatusText(rq.Status)
		e.Response.Content.Size = rq.Bytes
		e.Response.BodySize = rq.Bytes
	}
	t := &e.Timings
	t.Blocked = orNA(rq.BlockedMS)
	t.Send, t.Wait, t.Receive = rq.SendMS, orZero(rq.WaitMS), orZero(rq.ReceiveMS)
	if up == nil {
		return e.finish()
	}
	e.Connection = ev.ID + "-" + strconv.Itoa(up.ID)
	e.ServerIPAddress = ipOf(up.TCP.RemoteAddr)
	if !rq.Reused {
		t.DNS = orNA(up.TCP.DNSMS)
		if up.TCP.ConnectMS != nil {
			t.Connect = *up.TCP.ConnectMS
			if up.TLS != nil && up.TLS.HandshakeMS != nil {
				t.SSL = *up.TLS.HandshakeMS
				t.Connect += t.SSL
			}
		}
	}
	return e.finish()
}

// tunnelEntry is the CONNECT entry of a passthrough tunnel, timed as
// harTunnelNote says, from anchors measured from accept so that the phases
// follow one another and time is the tunnel's life.
func tunnelEntry(ev *event.Event) *harEntry {
	scheme := "http"
	if _, port, _ := net.SplitHostPort(ev.Target); ev.TLS != nil || port == "443" {
		scheme = "https"
	}
	e := newEntry(ev.Start, http.MethodConnect, scheme+"://"+ev.Target, "HTTP/1.1")
	e.Comment = ev.Error
	tcp := ev.TCP
	if tcp == nil {
		return e.finish()
	}
	e.ServerIPAddress = ipOf(tcp.RemoteAddr)
	e.Timings.DNS = orNA(tcp.DNSMS)
	if tcp.ConnectMS == nil {
		return e.finish()
	}
	e.Response.Status = http.StatusOK
	e.Response.StatusText = "Connection established"
	e.Request.BodySize = tcp.BytesUp
	e.Response.BodySize = tcp.BytesDown
	e.Response.Content.Size = tcp.BytesDown
	e.Connection = ev.ID

	t := &e.Timings
	dial := tcp.ConnectAt - *tcp.ConnectMS - orZero(tcp.DNSMS)
	t.Blocked = max(dial, 0)
	ready := tcp.ConnectAt
	if tls := ev.TLS; tls != nil && tls.HandshakeMS != nil && tls.HandshakeDone != nil {
		t.SSL = *tls.HandshakeMS
		ready = max(ready, *tls.HandshakeDone)
	}
	t.Connect = max(ready-dial-orZero(tcp.DNSMS), *tcp.ConnectMS, t.SSL)
	if ttfb, ok := tunnelTTFB(ev.TLS); ok {
		t.Send = max(*ev.TLS.AppDataUpMS-ready, 0)
		t.Wait = ttfb
		ready = *ev.TLS.AppDataDownMS
	}
	t.Receive = max(timing.MS(ev.End.Sub(ev.Start))-ready, 0)
	return e.finish()
}

// absURL makes a request URL absolute, as HAR requires, from the upstream's
// or the connection's host when the event has only a path.
func absURL(ev *event.Event, up *event.Upstream, raw string) string {
	if u, err := url.Parse(raw); err == nil && u.IsAbs() {
		return raw
	}
	scheme, host := "http", ev.Target
	if ev.Kind == event.KindMITM {
		scheme = "https"
	}
	if up != nil && up.Target != "" {
		host = up.Target
	}
	if !strings.HasPrefix(raw, "/") {
		raw = "/" + raw
	}
	return scheme + "://" + host + raw
}

// queryString lists a URL's query parameters in their order.
func queryString(raw string) []harNV {
	qs := []harNV{}
	u, err := url.Parse(raw)
	if err != nil || u.RawQuery == "" {
		return qs
	}
	for kv := range strings.SplitSeq(u.RawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if kk, err := url.QueryUnescape(k); err == nil {
			k = kk
		}
		if vv, err := url.QueryUnescape(v); err == nil {
			v = vv
		}
		qs = append(qs, harNV{Name: k, Value: v})
	}
	return qs
}

// ipOf is the IP of a host:port, zone dropped; "" if it is not one.
func ipOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	host, _, _ = strings.Cut(host, "%")
	if ip := net.ParseIP(host); ip != nil {
		return ip.String()
	}
	return ""
}

func msDuration(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
