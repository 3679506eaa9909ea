package console

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/inspectproxy/inspectproxy/event"
)

// Lanes of the sequence diagram.
const (
	laneClient = "client"
	laneProxy  = "proxy"
	laneServer = "server"
)

// Step is one arrow or span of a connection's sequence diagram. Times are
// when the proxy saw it, in milliseconds from the accept of the client
// connection: the proxy sits between the two ends, so the client's and
// the server's own clocks are not known.
type Step struct {
	At float64 `json:"at"`
	// End, for a span (a DNS lookup, the half-close), is when it ended.
	End *float64 `json:"end,omitempty"`
	// From and To are lanes; equal for a span or a note on one lane.
	From string `json:"from"`
	To   string `json:"to"`
	// Layer is tcp, dns, tls, http, data or note: the diagram's colours.
	Layer  string `json:"layer"`
	Label  string `json:"label"`
	Detail string `json:"detail,omitempty"`
	// Encrypted marks TLS 1.3 records whose content the proxy infers.
	Encrypted bool `json:"enc,omitempty"`
	// Bad marks a failure (refused connect, alert, reset).
	Bad bool `json:"bad,omitempty"`
}

// story is the connection's wire story, in the order things happened.
type story struct {
	steps []Step
}

func (s *story) add(at float64, from, to, layer, label, detail string) *Step {
	// Microseconds, the events' precision: a sum such as start_ms + ms
	// must not land a float's rounding error after an equal time.
	at = math.Round(at*1000) / 1000
	s.steps = append(s.steps, Step{At: at, From: from, To: to, Layer: layer, Label: label, Detail: detail})
	return &s.steps[len(s.steps)-1]
}

func (s *story) span(at, end float64, lane, layer, label, detail string) {
	st := s.add(at, lane, lane, layer, label, detail)
	end = math.Round(end*1000) / 1000
	st.End = &end
}

// Story tells ev as steps in wire order (by time; steps at the same time
// keep the order of the protocol).
func Story(ev *event.Event) []Step {
	var s story
	req := "CONNECT " + ev.Target
	switch {
	case ev.Source == event.SourceSOCKS5:
		req = "SOCKS5 CONNECT " + ev.Target
	case ev.Source == event.SourceWireGuard:
		req = "SYN to " + ev.Target + " (WireGuard)"
	case ev.Kind == event.KindHTTP && len(ev.HTTP) > 0:
		req = ev.HTTP[0].Method + " " + ev.HTTP[0].URL
	}
	s.add(0, laneClient, laneProxy, "tcp", "accept", "the kernel completed the client's three-way handshake with the proxy; client "+ev.Client)
	if ev.Kind != event.KindHTTP {
		s.add(0, laneClient, laneProxy, "http", req, "")
	}
	switch ev.Kind {
	case event.KindHTTP, event.KindMITM:
		for i := range ev.Upstreams {
			u := &ev.Upstreams[i]
			s.tcp(&u.TCP, laneProxy, u.Target, u.Error)
			if u.TLS != nil {
				s.tls(u.TLS, laneProxy)
			}
		}
		if len(ev.Upstreams) == 0 && ev.TCP != nil {
			s.tcp(ev.TCP, laneProxy, ev.Target, "")
		}
		if ev.Kind == event.KindMITM {
			at := 0.0
			if len(ev.HTTP) > 0 {
				at = ev.HTTP[0].StartMS
			}
			s.add(at, laneProxy, laneClient, "tls", "TLS with the proxy's certificate", "the client's handshake with the proxy (decrypted: MITM)")
		}
		for i := range ev.HTTP {
			s.http(&ev.HTTP[i])
		}
	default:
		if ev.TCP != nil {
			s.tcp(ev.TCP, laneClient, ev.Target, "")
		}
		if ev.TLS != nil {
			s.tls(ev.TLS, laneClient)
		}
	}
	if ev.Error != "" && ev.TCP == nil {
		s.add(0, laneProxy, laneClient, "note", "refused", ev.Error).Bad = true
	}
	if !ev.End.IsZero() {
		// The close is the last step by definition: a duration measured on
		// another clock than the FINs must not put it before them.
		end := ev.End.Sub(ev.Start).Seconds() * 1000
		for _, st := range s.steps {
			end = max(end, st.At, deref(st.End))
		}
		detail := "both sides closed"
		if ev.TCP != nil && ev.TCP.Timeout != "" {
			detail = "the proxy's " + ev.TCP.Timeout + " timeout ended it"
		}
		s.add(end, laneProxy, laneProxy, "note", "closed", detail)
	}
	slices.SortStableFunc(s.steps, func(a, b Step) int { return cmp.Compare(a.At, b.At) })
	return s.steps
}

// tcp adds one upstream connection: DNS, the connect attempts, and its
// close. from is the lane its FIN comes from on the client's side (the
// client for a tunnel, the proxy for a connection it made itself).
func (s *story) tcp(t *event.TCP, from, target, upErr string) {
	host := hostOf(target)
	// When the dial began: the first attempt, or the connect's start; for
	// a connect that never came up, the lookup is taken to start at once.
	dial := t.ConnectAt
	switch {
	case len(t.Attempts) > 0:
		dial = t.Attempts[0].StartMS
	case t.ConnectMS != nil:
		dial -= *t.ConnectMS
	case t.DNSMS != nil:
		dial = *t.DNSMS
	}
	if t.DNSMS != nil {
		addr := ""
		if t.RemoteAddr != "" {
			addr = " → " + hostOf(t.RemoteAddr)
		}
		start := max(0, dial-*t.DNSMS)
		if t.DialAtMS != nil { // measured, rather than worked back
			start = *t.DialAtMS
		}
		s.span(start, start+*t.DNSMS, laneProxy, "dns", "DNS "+host, fmt.Sprintf("%s%s in %s", host, addr, ms(*t.DNSMS)))
	}
	if len(t.Attempts) > 0 {
		for _, a := range t.Attempts {
			s.add(a.StartMS, laneProxy, laneServer, "tcp", "SYN", "to "+a.Addr)
			switch a.Outcome {
			case "connected":
				// connect_at_ms is when the connection was up; the sum of
				// two rounded numbers may miss it by a microsecond.
				up := a.StartMS + a.MS
				if t.ConnectAt > 0 {
					up = t.ConnectAt
				}
				s.add(up, laneServer, laneProxy, "tcp", "SYN-ACK", fmt.Sprintf("from %s: round trip %s", a.Addr, ms(a.MS)))
				s.add(up, laneProxy, laneServer, "tcp", "ACK", "connected")
			case "refused":
				s.add(a.StartMS+a.MS, laneServer, laneProxy, "tcp", "RST", a.Addr+" refused the connection").Bad = true
			default:
				s.add(a.StartMS+a.MS, laneProxy, laneProxy, "note", a.Outcome, strings.TrimSpace(a.Addr+" "+a.Error)).Bad = a.Outcome != "cancelled"
			}
		}
	} else if t.ConnectMS != nil {
		s.add(dial, laneProxy, laneServer, "tcp", "SYN", "to "+t.RemoteAddr)
		s.add(t.ConnectAt, laneServer, laneProxy, "tcp", "SYN-ACK", "round trip "+ms(*t.ConnectMS))
		s.add(t.ConnectAt, laneProxy, laneServer, "tcp", "ACK", "connected to "+t.RemoteAddr)
	}
	if upErr != "" {
		s.add(t.ConnectAt, laneProxy, laneProxy, "note", "upstream failed", upErr).Bad = true
	}
	if t.ConnectMS != nil && from == laneClient {
		s.add(t.ConnectAt, laneProxy, laneClient, "http", "200 Connection established", "the proxy answers once the upstream is connected")
	}
	fins := []struct {
		at       *float64
		from, to string
	}{{t.ClientFINMS, from, laneServer}, {t.ServerFINMS, laneServer, from}}
	if t.FirstFIN == event.SideServer {
		fins[0], fins[1] = fins[1], fins[0]
	}
	// first_fin may come from the kernel (a FIN that arrived before the
	// proxy read it): then the first FIN is drawn no later than the other.
	if fins[0].at != nil && fins[1].at != nil && *fins[1].at < *fins[0].at {
		at := *fins[1].at
		fins[0].at = &at
	}
	for i, f := range fins {
		if f.at == nil {
			continue
		}
		label, detail := "FIN", "half-close: no more data this way"
		if i == 0 {
			label, detail = "FIN (first)", "the "+sideName(f.from)+" closes first"
		}
		s.add(*f.at, f.from, f.to, "tcp", label, detail)
	}
	if t.HalfCloseMS != nil && fins[0].at != nil && fins[1].at != nil {
		s.span(*fins[0].at, *fins[1].at, laneProxy, "tcp", "half-close "+ms(*t.HalfCloseMS), "one direction closed, the other still open")
	}
	if t.RST != "" {
		at := t.DurationMS
		rfrom, rto := laneServer, from
		if t.ConnectMS == nil { // the connect itself was refused
			rto = laneProxy
		}
		switch t.RST {
		case event.SideClient:
			rfrom, rto = laneClient, laneServer
		case event.SideProxy:
			rfrom, rto = laneProxy, laneServer
		}
		detail := "reset by the " + t.RST
		if t.RSTCause != "" {
			detail += ": " + t.RSTCause
		}
		s.add(at, rfrom, rto, "tcp", "RST", detail).Bad = true
	}
}

func sideName(lane string) string {
	if lane == laneProxy {
		return "proxy (on the client's behalf)"
	}
	return lane
}

// tls adds a handshake between from (the client, or the proxy for its own
// upstream handshake) and the server.
func (s *story) tls(t *event.TLS, from string) {
	v13 := t.VersionCode == 0x0304 || t.Version == "TLS 1.3"
	if t.ClientHelloMS != nil {
		var d []string
		if t.SNI != "" {
			d = append(d, "SNI "+t.SNI)
		}
		if ch := t.ClientHello; ch != nil {
			if len(ch.ALPN) > 0 {
				d = append(d, "ALPN "+strings.Join(ch.ALPN, ","))
			}
			if ch.Size > 0 {
				d = append(d, fmt.Sprintf("%d bytes", ch.Size))
			}
		}
		s.add(*t.ClientHelloMS, from, laneServer, "tls", "ClientHello", strings.Join(d, " · "))
	}
	if h := t.HelloRetry; h != nil {
		if h.AtMS != nil {
			s.add(*h.AtMS, laneServer, from, "tls", "HelloRetryRequest", "the server asks for a key share in "+h.Group)
		}
		if h.SecondClientHelloMS != nil {
			s.add(*h.SecondClientHelloMS, from, laneServer, "tls", "ClientHello (2nd)", "key share "+strings.Join(h.KeyShares, ","))
		}
	}
	if t.ServerHelloMS != nil {
		d := strings.Join(nonEmpty(t.Version, t.Cipher, t.KeyExchangeGroup), " · ")
		s.add(*t.ServerHelloMS, laneServer, from, "tls", "ServerHello", d)
		flight := "Certificate, ServerKeyExchange, ServerHelloDone"
		if v13 {
			flight = "{EncryptedExtensions, Certificate, CertificateVerify, Finished}"
		}
		if t.Resumed {
			flight = "ChangeCipherSpec, Finished (resumed)"
			if v13 {
				flight = "{EncryptedExtensions, Finished} (resumed)"
			}
		}
		st := s.add(*t.ServerHelloMS, laneServer, from, "tls", flight, certDetail(t))
		st.Encrypted = v13
	}
	if t.HandshakeDone != nil {
		switch {
		case v13:
			s.add(*t.HandshakeDone, from, laneServer, "tls", "{Finished}", "handshake done: "+ms(deref(t.HandshakeMS))+" from the ClientHello").Encrypted = true
		case t.Resumed:
			s.add(*t.HandshakeDone, from, laneServer, "tls", "ChangeCipherSpec, Finished", "handshake done (resumed)")
		default:
			s.add(*t.HandshakeDone, from, laneServer, "tls", "ClientKeyExchange, ChangeCipherSpec, Finished", "")
			s.add(*t.HandshakeDone, laneServer, from, "tls", "ChangeCipherSpec, Finished", "handshake done: "+ms(deref(t.HandshakeMS))+" from the ClientHello")
		}
	}
	if f := t.Failure; f != nil && f.AtMS != nil {
		ffrom, fto := laneServer, from
		if f.By == event.SideClient {
			ffrom, fto = from, laneServer
		}
		label := "handshake failed (" + f.How + ")"
		if f.Alert != "" {
			label = "alert: " + f.Alert
		}
		s.add(*f.AtMS, ffrom, fto, "tls", label, "after "+f.Phase).Bad = true
	}
	if t.AppDataUpMS != nil {
		s.add(*t.AppDataUpMS, from, laneServer, "data", "application data", "first encrypted data up").Encrypted = true
	}
	if t.AppDataDownMS != nil {
		d := "first encrypted data down"
		if ttfb, ok := t.TunnelTTFB(); ok {
			d += ": " + ms(ttfb) + " after the first data up (TTFB)"
		}
		s.add(*t.AppDataDownMS, laneServer, from, "data", "application data", d).Encrypted = true
	}
}

func certDetail(t *event.TLS) string {
	if len(t.Chain) == 0 {
		return t.ChainError
	}
	d := t.Chain[0].Subject
	switch {
	case t.Verified != nil && *t.Verified:
		d += " · verified"
	case t.VerifyErrorKind != "":
		d += " · " + t.VerifyErrorKind
	}
	if t.ChainSource != "" {
		d += " (chain " + t.ChainSource + ")"
	}
	return d
}

// http adds one request and its response.
func (s *story) http(h *event.HTTP) {
	path := h.URL
	if u, err := url.Parse(h.URL); err == nil && u.Path != "" {
		path = u.RequestURI()
	}
	sent := h.StartMS + deref(h.BlockedMS)
	detail := h.Proto
	if h.Reused {
		detail = strings.TrimSpace(detail + " · reused connection")
	}
	s.add(h.StartMS, laneClient, laneServer, "http", h.Method+" "+path, detail)
	if h.Error != "" {
		s.add(sent+h.SendMS, laneProxy, laneClient, "http", "request failed", h.Error).Bad = true
		return
	}
	if h.WaitMS != nil {
		first := sent + h.SendMS + *h.WaitMS
		s.add(first, laneServer, laneClient, "http", fmt.Sprintf("%d response", h.Status), "first byte after "+ms(*h.WaitMS)+" (TTFB)")
		if h.ReceiveMS != nil && *h.ReceiveMS > 0 {
			s.span(first, first+*h.ReceiveMS, laneProxy, "http", "receive "+byteSize(h.Bytes), "last byte after "+ms(*h.ReceiveMS))
		}
	}
}

func nonEmpty(ss ...string) []string {
	return slices.DeleteFunc(ss, func(s string) bool { return s == "" })
}

func deref(v *float64) float64 {
	if v == nil {
		return 0
	}
	return *v
}

// hostOf is the host of host:port, or addr itself without a port.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// ms formats milliseconds with three significant decimals at most.
func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
