// Package outcome says what became of a client connection: whether it
// reached a server, and, when it failed, why, in a handful of classes a
// person can count (dns, refused, timeout, ...). The latency report's
// failures table, its "slowest" ranking, the ATS audit's "never connected"
// list and the report filters all ask this one package, so that they agree.
//
// Everything is decided from the event's facts: a stream whose upstream
// TCP connect never completed (tcp.connect_ms null) did not reach a
// server, whatever else it says; the class comes from the connect attempts,
// the proxy's own answer (http[].status without an upstream) and, last, the
// error text.
package outcome

import (
	"net"
	"strings"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/onboard"
)

// Failure classes.
const (
	// NoRequest: the client closed, or was closed at the header timeout,
	// before naming a target (a port scan, a SOCKS client on the HTTP port).
	NoRequest = "no_request"
	DNS       = "dns"
	Refused   = "refused"
	Timeout   = "timeout"
	// Unreachable: no route to the host or network.
	Unreachable = "unreachable"
	// ProxyRefused: the proxy answered itself (access control, auth, a loop,
	// a request that was not a proxy request, a limit).
	ProxyRefused = "proxy_refused"
	// TLSAlert: the TLS handshake ended before it was done (an alert, a
	// close or reset mid-handshake, a client refusing the certificate).
	TLSAlert = "tls_alert"
	// Verify: the proxy's upstream handshake (MITM) refused the server's chain.
	Verify = "verify"
	// Reset: the connection was reset after it was up.
	Reset = "reset"
	Other = "other"
)

// Classes lists the failure classes in the order reports show them.
func Classes() []string {
	return []string{NoRequest, DNS, Refused, Timeout, Unreachable, ProxyRefused, TLSAlert, Verify, Reset, Other}
}

// Outcome is what became of one client connection.
type Outcome struct {
	// Reached is true when at least one upstream TCP connection was up (or,
	// for an event without TCP facts, a server's handshake was seen).
	Reached bool
	// Reason is the failure class, "" when the connection did not fail.
	Reason string
	// Detail is the evidence: the error, or what the class was read from.
	Detail string
}

// Failed reports whether the connection failed.
func (o Outcome) Failed() bool { return o.Reason != "" }

// ByProxy reports a connection the proxy answered itself (its setup page):
// it reached no server and did not fail.
func (o Outcome) ByProxy() bool { return !o.Reached && o.Reason == "" }

// Of classifies ev.
func Of(ev *event.Event) Outcome {
	switch ev.Kind {
	case event.KindGap, event.KindDNS, event.KindUDP:
		return Outcome{Reached: true}
	}
	if host, _, _ := net.SplitHostPort(ev.Target); strings.EqualFold(host, onboard.Host) {
		// The proxy's own setup page: it served the client itself.
		return Outcome{Detail: "the proxy's setup page"}
	}
	if ev.Target == "" && ev.TCP == nil && len(ev.HTTP) == 0 && len(ev.Upstreams) == 0 {
		return Outcome{Reason: NoRequest, Detail: firstNonEmpty(ev.Error, "no request before the connection closed")}
	}
	o := Outcome{Reached: eventReached(ev)}
	if !o.Reached {
		o.Reason, o.Detail = notReached(ev)
		return o
	}
	o.Reason, o.Detail = afterConnect(ev)
	return o
}

// Reached reports whether an upstream connection with these facts reached
// a server: its TCP connect completed or, with no TCP facts, a server's
// handshake was seen.
func Reached(tcp *event.TCP, tls *event.TLS) bool {
	if tcp != nil {
		return tcp.ConnectMS != nil
	}
	return tls != nil && (tls.Version != "" || len(tls.Chain) > 0)
}

func eventReached(ev *event.Event) bool {
	if ev.Kind == event.KindTunnel {
		return Reached(ev.TCP, ev.TLS)
	}
	for i := range ev.Upstreams {
		if Reached(&ev.Upstreams[i].TCP, ev.Upstreams[i].TLS) {
			return true
		}
	}
	if len(ev.Upstreams) > 0 {
		return false
	}
	if ev.TCP != nil || ev.TLS != nil {
		return Reached(ev.TCP, ev.TLS)
	}
	// Requests with no upstream recorded: reached unless the proxy
	// answered them itself or they failed.
	for _, h := range ev.HTTP {
		if h.Error == "" && !proxyStatus(h.Status) {
			return true
		}
	}
	return false
}

// RequestReached reports whether one request of an http or mitm event went
// to a server: its upstream connected, or none is recorded and neither an
// error nor the proxy's own answer says it did not.
func RequestReached(ev *event.Event, h *event.HTTP) bool {
	for i := range ev.Upstreams {
		if up := &ev.Upstreams[i]; up.ID == h.UpstreamID {
			return Reached(&up.TCP, up.TLS)
		}
	}
	if ev.Kind == event.KindMITM && ev.TCP != nil {
		return Reached(ev.TCP, ev.TLS)
	}
	return h.Error == "" && !proxyStatus(h.Status)
}

// proxyStatus is a status the proxy sends itself when it does not forward.
func proxyStatus(s int) bool {
	switch s {
	case 400, 403, 405, 407, 421, 431, 503:
		return true
	}
	return false
}

func notReached(ev *event.Event) (reason, detail string) {
	errText := ev.Error
	for _, up := range ev.Upstreams {
		errText = firstNonEmpty(errText, up.Error)
	}
	for _, h := range ev.HTTP {
		if proxyStatus(h.Status) {
			return ProxyRefused, firstNonEmpty(h.Error, errText, "the proxy answered "+statusText(h.Status))
		}
		errText = firstNonEmpty(errText, h.Error)
	}
	if ev.TCP != nil {
		if r := fromAttempts(ev.TCP.Attempts); r != "" {
			return r, firstNonEmpty(errText, "every connect attempt: "+r)
		}
	}
	if errText == "" {
		return Other, "no upstream connection"
	}
	return Classify(errText), errText
}

// fromAttempts is the class of the attempts when they all failed alike.
func fromAttempts(as []event.Attempt) string {
	reason := ""
	for _, a := range as {
		r := ""
		switch a.Outcome {
		case "refused":
			r = Refused
		case "timeout":
			r = Timeout
		case "unreachable":
			r = Unreachable
		case "denied":
			r = ProxyRefused
		case "cancelled":
			continue
		default:
			return ""
		}
		if reason != "" && r != reason {
			return ""
		}
		reason = r
	}
	return reason
}

func afterConnect(ev *event.Event) (reason, detail string) {
	tlsFailure := func(t *event.TLS) (string, string) {
		switch {
		case t == nil:
		case t.ClientRejected != nil:
			return TLSAlert, "the client refused the certificate (likely " + t.ClientRejected.Likely + ")" + prefixed(": ", t.ClientRejected.Alert)
		case t.Failure != nil:
			return TLSAlert, "handshake ended by " + t.Failure.By + " (" + t.Failure.How + prefixed(" ", t.Failure.Alert) + ") after " + t.Failure.Phase
		case t.Alert != "" && t.HandshakeDone == nil:
			return TLSAlert, "alert " + t.Alert
		}
		return "", ""
	}
	if r, d := tlsFailure(ev.TLS); r != "" {
		return r, d
	}
	for _, up := range ev.Upstreams {
		if up.TLS != nil && up.TLS.VerifyError != "" && up.Error != "" {
			return Verify, up.Error
		}
		if r, d := tlsFailure(up.TLS); r != "" {
			return r, d
		}
		if up.Error != "" {
			return Classify(up.Error), up.Error
		}
	}
	if ev.Error != "" {
		return Classify(ev.Error), ev.Error
	}
	for _, h := range ev.HTTP {
		if h.Error != "" {
			return Classify(h.Error), h.Error
		}
	}
	return "", ""
}

// Classify maps an error text to a failure class. It is the last resort,
// after the structured facts; Go's and the proxy's wording is stable.
func Classify(text string) string {
	t := strings.ToLower(text)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(t, w) {
				return true
			}
		}
		return false
	}
	switch {
	case has("no such host", "server misbehaving", "timing: dns", "lookup "):
		return DNS
	case has("connection refused"):
		return Refused
	case has("network is unreachable", "no route to host", "host is unreachable"):
		return Unreachable
	case has("destination denied", "not allowed", "proxy auth", "proxy-authorization", "forbidden", "is a proxy:", "a loop", "too many connections",
		"access: ", "limits.", "setup page", "shutting down"):
		return ProxyRefused
	case has("x509:", "certificate", "verify"):
		return Verify
	case has("tls:", "handshake"):
		return TLSAlert
	case has("timeout", "timed out", "deadline exceeded"):
		return Timeout
	case has("reset by peer", "connection reset"):
		return Reset
	}
	return Other
}

func statusText(s int) string {
	switch s {
	case 400:
		return "400 (not a proxy request)"
	case 403:
		return "403 (refused)"
	case 407:
		return "407 (proxy authentication required)"
	case 431:
		return "431 (request headers too large)"
	case 503:
		return "503 (over the connection limit)"
	}
	return "a status of its own"
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
