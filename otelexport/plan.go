package otelexport

import (
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/inspectproxy/inspectproxy/event"
)

// Span names besides the root's ("<kind> <target>") and an exchange's
// (its method, as the HTTP semantic conventions name client spans).
const (
	spanDNS       = "dns"
	spanConnect   = "tcp connect"
	spanTLS       = "tls handshake"
	spanUpstream  = "upstream"
	spanSend      = "send"
	spanWait      = "wait"
	spanReceive   = "receive"
	spanHalfClose = "half-close"
)

// Span event names.
const (
	evClientHello       = "tls.client_hello"
	evHelloRetry        = "tls.hello_retry_request"
	evSecondClientHello = "tls.client_hello.second"
	evServerHello       = "tls.server_hello"
	evHandshakeFailure  = "tls.handshake_failure"
	evClientRejected    = "tls.client_rejected"
	evFirstFIN          = "tcp.first_fin"
	evRST               = "tcp.rst"
)

// maxSpans bounds one trace: a keep-alive connection with thousands of
// requests keeps its first ones and says how many it left out.
const maxSpans = 512

// span is one span to export: the plan is built from the event alone,
// before any SDK call, so that a trace is admitted or dropped whole.
type span struct {
	name       string
	parent     int // index in the plan; -1 for the root
	link       int // index of a span this one is linked to; -1 for none
	kind       trace.SpanKind
	start, end time.Time
	attrs      []attribute.KeyValue
	events     []spanEvent
	// err, when set, is the span's error status description.
	err string
}

type spanEvent struct {
	name  string
	at    time.Time
	attrs []attribute.KeyValue
}

// planner builds one event's spans; every *_ms of the event is relative
// to ev.Start, the client's accept.
type planner struct {
	ev      *event.Event
	spans   []span
	dropped int
}

// plan maps a finished event to its spans, the root first and every parent
// before its children.
func plan(ev *event.Event) []span {
	p := &planner{ev: ev}
	root := p.add(span{name: rootName(ev), parent: -1, link: -1, kind: trace.SpanKindServer, start: ev.Start, end: ev.End, attrs: rootAttrs(ev), err: ev.Error})
	switch ev.Kind {
	case event.KindDNS, event.KindUDP:
		// One span: the lookup or the flow, described by its attributes.
	case event.KindTunnel:
		if ev.TCP != nil {
			p.spans[root].attrs = appendTCP(p.spans[root].attrs, ev.TCP)
			p.connection(root, ev.Target, ev.TCP, ev.TLS, ev.TCP.DurationMS) // a tunnel's runs from the accept
		}
	default:
		// Requests are the client's, so children of the root, linked to
		// the upstream connection they used (a request may wait for its
		// connection, and so start before it).
		ups := make(map[int]int, len(ev.Upstreams)) // upstream id → span
		ready := make(map[int]float64, len(ev.Upstreams))
		for i := range ev.Upstreams {
			up := &ev.Upstreams[i]
			ups[up.ID], ready[up.ID] = p.upstream(root, up)
		}
		for i := range ev.HTTP {
			h := &ev.HTTP[i]
			link, ok := ups[h.UpstreamID]
			if !ok {
				link = -1
			}
			r := -1.0
			if rd, ok := ready[h.UpstreamID]; ok && !h.Reused {
				r = rd
			}
			p.exchange(root, link, h, r)
		}
	}
	if p.dropped > 0 {
		p.spans[root].attrs = append(p.spans[root].attrs, attribute.Int("inspectproxy.spans_dropped", p.dropped))
	}
	return p.spans
}

// add appends s unless the trace is full (or its parent was left out);
// it returns s's index, or -1.
func (p *planner) add(s span) int {
	if len(p.spans) == maxSpans || (len(p.spans) > 0 && s.parent < 0) {
		p.dropped++
		return -1
	}
	if s.end.Before(s.start) {
		s.end = s.start
	}
	p.spans = append(p.spans, s)
	return len(p.spans) - 1
}

// at is the wall time of an offset in milliseconds.
func (p *planner) at(ms float64) time.Time {
	return p.ev.Start.Add(time.Duration(math.Round(ms * 1e6)))
}

// child adds a span under parent, from and to in ms.
func (p *planner) child(parent int, name string, kind trace.SpanKind, from, to float64, attrs ...attribute.KeyValue) int {
	return p.add(span{name: name, parent: parent, link: -1, kind: kind, start: p.at(from), end: p.at(to), attrs: attrs})
}

func (p *planner) event(i int, name string, ms float64, attrs ...attribute.KeyValue) {
	if i >= 0 {
		p.spans[i].events = append(p.spans[i].events, spanEvent{name: name, at: p.at(ms), attrs: attrs})
	}
}

// dns is a connection's lookup: it ends where the first connect attempt
// began or, when it failed, its length after the dial began.
func dns(tcp *event.TCP) (from, to float64, ok bool) {
	switch {
	case tcp.DNSMS == nil:
		return 0, 0, false
	case len(tcp.Attempts) > 0:
		to = tcp.Attempts[0].StartMS
	case tcp.DialAtMS != nil:
		to = *tcp.DialAtMS + *tcp.DNSMS
	default:
		return 0, 0, false
	}
	return to - *tcp.DNSMS, to, true
}

// upstream adds an http or mitm connection's upstream span, from its dial
// to its close, with the connection's own spans under it. It returns the
// span and when the connection was ready for a request (-1 if never).
func (p *planner) upstream(root int, up *event.Upstream) (int, float64) {
	tcp := &up.TCP
	from := 0.0
	if tcp.DialAtMS != nil {
		from = *tcp.DialAtMS
	}
	to := from + tcp.DurationMS // an upstream's duration runs from its dial
	attrs := make([]attribute.KeyValue, 0, 32)
	attrs = append(attrs, attribute.Int("inspectproxy.upstream.id", up.ID))
	attrs = appendHostPort(attrs, semconv.ServerAddressKey, semconv.ServerPortKey, up.Target)
	attrs = appendTCP(attrs, tcp)
	attrs = appendTLS(attrs, up.TLS, up.Target)
	i := p.child(root, spanUpstream+" "+up.Target, trace.SpanKindClient, from, to, attrs...)
	if i >= 0 {
		p.spans[i].err = up.Error
	}
	return i, p.connection(i, up.Target, tcp, up.TLS, to)
}

func (p *planner) endMS() float64 { return float64(p.ev.End.Sub(p.ev.Start)) / 1e6 }

// connection adds the DNS, connect, TLS and half-close spans of one TCP
// connection to target under parent, with the FIN and RST as parent's span
// events. Each span names the target (server.address), so that a backend
// can aggregate a phase per destination. closeAt is when the connection
// was closed. It returns when the connection was ready for data, or -1.
func (p *planner) connection(parent int, target string, tcp *event.TCP, tls *event.TLS, closeAt float64) float64 {
	ready := -1.0
	// Clipped: every append below copies, none writes into another's.
	server := slices.Clip(appendHostPort(nil, semconv.ServerAddressKey, semconv.ServerPortKey, target))
	if from, to, ok := dns(tcp); ok {
		attrs := server
		if len(server) > 0 {
			attrs = append(server, semconv.DNSQuestionName(server[0].Value.AsString()))
		}
		p.child(parent, spanDNS, trace.SpanKindClient, from, to, attrs...)
	}
	for _, a := range tcp.Attempts {
		attrs := appendHostPort(append(make([]attribute.KeyValue, 0, 6), server...), semconv.NetworkPeerAddressKey, semconv.NetworkPeerPortKey, a.Addr)
		attrs = append(attrs, semconv.NetworkTransportTCP, attribute.String("inspectproxy.tcp.attempt.outcome", a.Outcome))
		if a.Outcome == "connected" && tcp.ConnectMS != nil {
			// The span is the attempt by the proxy's clock; the handshake
			// itself, by the kernel's (TCP_INFO), is shorter.
			attrs = append(attrs, attribute.Float64("inspectproxy.tcp.connect_ms", *tcp.ConnectMS))
		}
		i := p.child(parent, spanConnect, trace.SpanKindClient, a.StartMS, a.StartMS+a.MS, attrs...)
		if i >= 0 && a.Outcome != "connected" && a.Outcome != "cancelled" {
			p.spans[i].err = orString(a.Error, a.Outcome)
		}
	}
	if tcp.ConnectAt > 0 {
		ready = tcp.ConnectAt
	}
	if done := p.handshake(parent, tls, server); done >= 0 {
		ready = done
	}
	if tcp.ClientFINMS != nil && tcp.ServerFINMS != nil {
		from, to := min(*tcp.ClientFINMS, *tcp.ServerFINMS), max(*tcp.ClientFINMS, *tcp.ServerFINMS)
		p.child(parent, spanHalfClose, trace.SpanKindInternal, from, to, append(server, attribute.String("inspectproxy.tcp.first_fin", tcp.FirstFIN))...)
	}
	if fin := firstFIN(tcp); fin != nil {
		p.event(parent, evFirstFIN, *fin, attribute.String("inspectproxy.tcp.side", tcp.FirstFIN))
	}
	if tcp.RST != "" {
		at := closeAt // events from before rst_ms was recorded
		if tcp.RSTMS != nil {
			at = *tcp.RSTMS
		}
		p.event(parent, evRST, at, appendStrings(nil, "inspectproxy.tcp.side", tcp.RST, "inspectproxy.tcp.rst_cause", tcp.RSTCause)...)
	}
	return ready
}

func firstFIN(tcp *event.TCP) *float64 {
	switch {
	case tcp.ClientFINMS == nil:
		return tcp.ServerFINMS
	case tcp.ServerFINMS == nil || *tcp.ClientFINMS <= *tcp.ServerFINMS:
		return tcp.ClientFINMS
	default:
		return tcp.ServerFINMS
	}
}

// handshake adds the TLS handshake span, ClientHello to done (or to its
// failure), with the hellos as span events. It returns when the handshake
// was done, or -1.
func (p *planner) handshake(parent int, t *event.TLS, server []attribute.KeyValue) float64 {
	if t == nil {
		return -1
	}
	// From the ClientHello (handshake_ms counts from it) to done.
	from, to := t.ClientHelloMS, t.HandshakeDone
	if from == nil && to != nil && t.HandshakeMS != nil {
		v := *to - *t.HandshakeMS
		from = &v
	}
	if from == nil {
		return -1
	}
	if to == nil && t.Failure != nil {
		to = t.Failure.AtMS
	}
	end := p.endMS()
	if to != nil {
		end = *to
	}
	i := p.child(parent, spanTLS, trace.SpanKindInternal, *from, end, server...)
	if i < 0 {
		return -1
	}
	if t.ClientHelloMS != nil {
		p.event(i, evClientHello, *t.ClientHelloMS, clientHelloAttrs(t)...)
	}
	if r := t.HelloRetry; r != nil {
		if r.AtMS != nil {
			p.event(i, evHelloRetry, *r.AtMS, append(appendStrings(nil, "inspectproxy.tls.hrr.group", r.Group), attribute.Bool("inspectproxy.tls.hrr.cookie", r.Cookie))...)
		}
		if r.SecondClientHelloMS != nil {
			p.event(i, evSecondClientHello, *r.SecondClientHelloMS,
				appendSlice(appendSlice(nil, "inspectproxy.tls.hrr.key_shares", r.KeyShares), "inspectproxy.tls.hrr.changed", r.Changed)...)
		}
	}
	if t.ServerHelloMS != nil {
		p.event(i, evServerHello, *t.ServerHelloMS) // what it chose is on the connection's span
	}
	if f := t.Failure; f != nil {
		at := end
		if f.AtMS != nil {
			at = *f.AtMS
		}
		p.event(i, evHandshakeFailure, at, appendStrings(nil, "inspectproxy.tls.failure.by", f.By, "inspectproxy.tls.failure.how", f.How,
			"inspectproxy.tls.failure.alert", f.Alert, "inspectproxy.tls.failure.phase", f.Phase)...)
		p.spans[i].err = "handshake ended by " + f.By + " (" + strings.TrimSpace(f.How+" "+f.Alert) + ") after " + f.Phase
	}
	if r := t.ClientRejected; r != nil {
		// after_ms counts from the server's flight, which follows the
		// ServerHello.
		at := end
		if t.ServerHelloMS != nil && r.AfterMS != nil {
			at = *t.ServerHelloMS + *r.AfterMS
		}
		p.event(i, evClientRejected, at, appendStrings(nil, "inspectproxy.tls.client_rejected.signal", r.Signal,
			"inspectproxy.tls.client_rejected.alert", r.Alert, "inspectproxy.tls.client_rejected.likely", r.Likely)...)
		p.spans[i].err = "the client rejected the certificate (likely " + r.Likely + ")"
	}
	if t.HandshakeDone == nil {
		return -1
	}
	return *t.HandshakeDone
}

// exchange adds one request, HAR-style: send from when it had a
// connection (after its new upstream was ready), then wait and receive.
// link is its upstream's span, or -1.
func (p *planner) exchange(parent, link int, h *event.HTTP, ready float64) {
	send := h.StartMS
	if h.BlockedMS != nil {
		send += *h.BlockedMS
	}
	send = max(send, ready)
	end := send + h.SendMS
	if h.WaitMS != nil {
		end += *h.WaitMS
		if h.ReceiveMS != nil {
			end += *h.ReceiveMS
		}
	}
	attrs := appendURL(make([]attribute.KeyValue, 0, 14), h.URL)
	attrs = append(attrs,
		semconv.HTTPRequestMethodKey.String(orString(h.Method, "_OTHER")),
		attribute.Bool("inspectproxy.http.reused", h.Reused),
		semconv.HTTPResponseBodySize(int(h.Bytes)),
	)
	if h.UpstreamID > 0 { // 0: the request never got a connection
		attrs = append(attrs, attribute.Int("inspectproxy.http.upstream_id", h.UpstreamID))
	}
	if h.Status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(h.Status))
	}
	if name, version, ok := strings.Cut(h.Proto, "/"); ok {
		attrs = append(attrs, semconv.NetworkProtocolName(strings.ToLower(name)), semconv.NetworkProtocolVersion(version))
	}
	if h.RequestBodySize > 0 {
		attrs = append(attrs, semconv.HTTPRequestBodySize(int(h.RequestBodySize)))
	}
	if h.BlockedMS != nil {
		attrs = append(attrs, attribute.Float64("inspectproxy.http.blocked_ms", *h.BlockedMS))
	}
	i := p.add(span{name: orString(h.Method, "HTTP"), parent: parent, link: link, kind: trace.SpanKindClient, start: p.at(h.StartMS), end: p.at(end), attrs: attrs})
	switch {
	case i < 0:
		// Left out; its phases below are counted as left out too.
	case h.Error != "":
		p.spans[i].err = h.Error
	case h.Status >= 500:
		// As for a server span: the proxy served the client's request,
		// and 4xx is the client's own doing.
		p.spans[i].err = strconv.Itoa(h.Status)
	}
	t := send
	p.child(i, spanSend, trace.SpanKindInternal, t, t+h.SendMS)
	t += h.SendMS
	if h.WaitMS == nil {
		return
	}
	p.child(i, spanWait, trace.SpanKindInternal, t, t+*h.WaitMS)
	t += *h.WaitMS
	if h.ReceiveMS != nil {
		p.child(i, spanReceive, trace.SpanKindInternal, t, t+*h.ReceiveMS)
	}
}

func rootName(ev *event.Event) string {
	target := ev.Target
	switch {
	case ev.DNS != nil:
		target = ev.DNS.Name
	case ev.UDP != nil:
		target = ev.UDP.Remote
	}
	if target == "" {
		return ev.Kind
	}
	return ev.Kind + " " + target
}

// rootAttrs describe the client connection: who, where to, what the
// proxy made of it.
func rootAttrs(ev *event.Event) []attribute.KeyValue {
	a := make([]attribute.KeyValue, 0, 64) // room for a tunnel's TCP too
	a = append(a, attribute.String("inspectproxy.event.id", ev.ID), attribute.String("inspectproxy.kind", ev.Kind))
	a = appendStrings(a, "inspectproxy.source", ev.Source, "inspectproxy.peer", ev.Peer,
		"inspectproxy.mitm_skipped", ev.MITMSkipped, "inspectproxy.tls_absent", ev.TLSAbsent,
		"inspectproxy.ats.absent", ev.ATSAbsent, "inspectproxy.limit", ev.Limit)
	a = appendHostPort(a, semconv.ClientAddressKey, semconv.ClientPortKey, ev.Client)
	if ev.Truncated {
		a = append(a, attribute.Bool("inspectproxy.truncated", true))
	}
	if ev.SNIMismatch {
		a = append(a, attribute.Bool("inspectproxy.sni_mismatch", true))
	}
	switch {
	case ev.DNS != nil:
		d := ev.DNS
		a = append(a, semconv.NetworkTransportUDP, semconv.DNSQuestionName(d.Name), attribute.Float64("inspectproxy.dns.ms", d.MS))
		a = appendSlice(a, string(semconv.DNSAnswersKey), d.Answers)
		a = appendStrings(a, "inspectproxy.dns.type", d.Type, "inspectproxy.dns.rcode", d.RCode)
	case ev.UDP != nil:
		u := ev.UDP
		a = append(a, semconv.NetworkTransportUDP)
		a = appendHostPort(a, semconv.NetworkPeerAddressKey, semconv.NetworkPeerPortKey, u.Remote)
		a = append(a, attribute.Int64("inspectproxy.udp.bytes_up", u.BytesUp), attribute.Int64("inspectproxy.udp.bytes_down", u.BytesDown),
			attribute.Int64("inspectproxy.udp.packets_up", u.PacketsUp), attribute.Int64("inspectproxy.udp.packets_down", u.PacketsDown),
			attribute.String("inspectproxy.udp.verdict", u.Verdict))
		if q := u.QUIC; q != nil {
			a = appendStrings(a, "inspectproxy.quic.version", q.Version, "inspectproxy.quic.sni", q.SNI)
			a = appendSlice(a, "inspectproxy.quic.alpn", q.ALPN)
		}
	default:
		a = append(a, semconv.NetworkTransportTCP)
		a = appendHostPort(a, semconv.ServerAddressKey, semconv.ServerPortKey, ev.Target)
	}
	return appendATS(appendTLS(a, ev.TLS, ev.Target), ev.ATS)
}

// appendTCP appends how an upstream connection went and ended.
func appendTCP(a []attribute.KeyValue, t *event.TCP) []attribute.KeyValue {
	a = appendHostPort(a, semconv.NetworkPeerAddressKey, semconv.NetworkPeerPortKey, t.RemoteAddr)
	a = append(a, attribute.Int64("inspectproxy.tcp.bytes_up", t.BytesUp), attribute.Int64("inspectproxy.tcp.bytes_down", t.BytesDown))
	a = appendStrings(a, "inspectproxy.tcp.first_fin", t.FirstFIN, "inspectproxy.tcp.rst", t.RST,
		"inspectproxy.tcp.rst_cause", t.RSTCause, "inspectproxy.tcp.timeout", t.Timeout, "inspectproxy.tcp.history", t.History)
	if t.HalfCloseMS != nil {
		a = append(a, attribute.Float64("inspectproxy.tcp.half_close_ms", *t.HalfCloseMS))
	}
	return a
}

// appendTLS appends the semantic conventions' tls.* where they exist
// (tls.client.ja3 and tls.server.ja3s are the hashes, as in their
// examples; certificate hashes are uppercase hex), and inspectproxy.tls.*
// for the rest.
// The SNI is given only when it is not the target's host.
func appendTLS(a []attribute.KeyValue, t *event.TLS, target string) []attribute.KeyValue {
	if t == nil {
		return a
	}
	if host, _, err := net.SplitHostPort(target); (err != nil || host != t.SNI) && t.SNI != "" {
		a = append(a, attribute.String("inspectproxy.tls.sni", t.SNI))
	}
	if name, version, ok := protocolVersion(t.VersionCode, t.Version); ok {
		a = append(a, semconv.TLSProtocolNameKey.String(name), semconv.TLSProtocolVersion(version))
	}
	a = appendStrings(a, string(semconv.TLSCipherKey), t.Cipher, string(semconv.TLSCurveKey), t.KeyExchangeGroup,
		string(semconv.TLSNextProtocolKey), strings.ToLower(t.ALPN), string(semconv.TLSClientJa3Key), t.JA3Hash,
		string(semconv.TLSServerJa3sKey), t.JA3SHash, "inspectproxy.tls.ja4", t.JA4,
		"inspectproxy.tls.chain_source", t.ChainSource, "inspectproxy.tls.chain_error", t.ChainError,
		"inspectproxy.tls.verify_error", t.VerifyError, "inspectproxy.tls.verify_error_kind", t.VerifyErrorKind,
		"inspectproxy.tls.alert", t.Alert, "inspectproxy.tls.parse_error", t.ParseError)
	a = append(a, semconv.TLSEstablished(t.HandshakeDone != nil), semconv.TLSResumed(t.Resumed))
	if t.Verified != nil {
		a = append(a, attribute.Bool("inspectproxy.tls.verified", *t.Verified))
	}
	if len(t.Chain) > 0 {
		leaf := &t.Chain[0]
		a = append(a, semconv.TLSServerSubject(leaf.Subject), semconv.TLSServerIssuer(leaf.Issuer),
			semconv.TLSServerNotAfter(leaf.NotAfter.UTC().Format(time.RFC3339)),
			semconv.TLSServerHashSha256(strings.ToUpper(leaf.SHA256)))
	}
	return a
}

// clientHelloAttrs are what the client offered, in short; the full hello
// (cipher list, extensions) stays in the JSON event, which the trace
// points to by inspectproxy.event.id: every attribute is paid for on each
// connection, in the proxy's CPU.
func clientHelloAttrs(t *event.TLS) []attribute.KeyValue {
	ch := t.ClientHello
	if ch == nil {
		return nil
	}
	a := appendSlice(nil, "inspectproxy.tls.client_hello.versions", ch.SupportedVersions)
	a = appendSlice(a, "inspectproxy.tls.client_hello.alpn", ch.ALPN)
	return append(a, attribute.Int("inspectproxy.tls.client_hello.size", ch.Size))
}

func appendATS(a []attribute.KeyValue, v *event.ATS) []attribute.KeyValue {
	if v == nil {
		return a
	}
	a = append(a, attribute.String("inspectproxy.ats.compliant", v.Compliant), attribute.String("inspectproxy.ats.policy", v.Policy))
	if len(v.Violations) > 0 {
		rules, details := violations(v.Violations)
		a = append(a, attribute.StringSlice("inspectproxy.ats.rules", rules), attribute.StringSlice("inspectproxy.ats.violations", details))
	}
	if len(v.Unknown) > 0 {
		rules, _ := violations(v.Unknown)
		a = append(a, attribute.StringSlice("inspectproxy.ats.unknown", rules))
	}
	if app := v.App; app != nil {
		a = append(a, attribute.Bool("inspectproxy.ats.app.allowed", app.Allowed))
		a = appendStrings(a, "inspectproxy.ats.app.domain", app.Domain, "inspectproxy.ats.app.key", app.Key, "inspectproxy.ats.app.reason", app.Reason)
	}
	return a
}

func violations(vs []event.Violation) (rules, details []string) {
	for _, v := range vs {
		rules = append(rules, v.Rule)
		details = append(details, v.Rule+": "+v.Detail)
	}
	return rules, details
}

// protocolVersion maps the IANA version number (or, in an event without
// it, the name) to tls.protocol.name and .version.
func protocolVersion(code uint16, name string) (string, string, bool) {
	switch code {
	case 0x0300:
		return "ssl", "3", true
	case 0x0301, 0x0302, 0x0303, 0x0304:
		return "tls", "1." + strconv.Itoa(int(code-0x0301)), true
	}
	if v, ok := strings.CutPrefix(name, "TLS "); ok {
		return "tls", v, true
	}
	return "", "", false
}

// appendStrings appends key, value pairs whose value is not empty.
func appendStrings(a []attribute.KeyValue, kv ...string) []attribute.KeyValue {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			a = append(a, attribute.String(kv[i], kv[i+1]))
		}
	}
	return a
}

// appendSlice appends key and value if value is not empty.
func appendSlice(a []attribute.KeyValue, key string, value []string) []attribute.KeyValue {
	if len(value) > 0 {
		a = append(a, attribute.StringSlice(key, value))
	}
	return a
}

// appendHostPort appends host:port as an address and a port attribute.
func appendHostPort(a []attribute.KeyValue, addrKey, portKey attribute.Key, hp string) []attribute.KeyValue {
	if hp == "" {
		return a
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return append(a, addrKey.String(hp))
	}
	a = append(a, addrKey.String(host))
	if n, err := strconv.Atoi(port); err == nil {
		a = append(a, portKey.Int(n))
	}
	return a
}

// appendURL appends url.full, with credentials replaced as its definition
// requires, and the server it names.
func appendURL(a []attribute.KeyValue, raw string) []attribute.KeyValue {
	u, err := url.Parse(raw)
	if err != nil {
		return append(a, semconv.URLFull(raw))
	}
	if u.Hostname() != "" {
		a = append(a, semconv.ServerAddress(u.Hostname()))
		port := 0
		switch u.Scheme {
		case "http":
			port = 80
		case "https":
			port = 443
		}
		if n, err := strconv.Atoi(u.Port()); err == nil {
			port = n
		}
		if port > 0 {
			a = append(a, semconv.ServerPort(port))
		}
	}
	if u.User != nil {
		raw = redacted(u)
	}
	return append(a, semconv.URLFull(raw))
}

// redactURL replaces credentials in a URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return redacted(u)
}

func redacted(u *url.URL) string {
	c := *u
	c.User = url.UserPassword("REDACTED", "REDACTED")
	return c.String()
}

func orString(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}
