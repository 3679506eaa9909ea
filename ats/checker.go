package ats

import (
	"fmt"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/outcome"
)

// Checker puts the ATS verdict, and the app's when a plist is given, into
// every event the proxy writes.
type Checker struct {
	Policy Policy
	App    *AppPolicy // optional
}

// Check sets ev.ATS or, for a connection ATS has nothing to judge (it
// never reached a server, or is no TCP connection), ev.ATSAbsent.
func (c Checker) Check(ev *event.Event) {
	if why := Absent(ev); why != "" {
		ev.ATS, ev.ATSAbsent = nil, why
		return
	}
	loads := reachedLoads(ev) // Absent saw it reach a server
	ev.ATS = evaluate(loads, c.Policy)
	if c.App != nil {
		ev.ATS.App = c.App.evaluate(loads)
	}
}

// Absent says why ATS has no verdict for ev, "" when it has one. A
// connection that never reached a server (no upstream TCP connect
// completed: a failed lookup, a refused connect, the proxy's own 403 or
// 407, a client that closed before asking for anything) was never a load
// an app's ATS would judge, so it gets no verdict and the audit lists it
// apart, by reason.
func Absent(ev *event.Event) string {
	switch ev.Kind {
	case event.KindDNS, event.KindUDP, event.KindGap:
		return "not a TCP connection: ATS judges URLSession loads over TCP"
	}
	switch oc := outcome.Of(ev); {
	case oc.ByProxy():
		return "answered by the proxy itself: " + oc.Detail
	case !oc.Reached:
		return NeverConnected + ": " + oc.Reason + ": " + oc.Detail
	}
	return ""
}

// NeverConnected starts the ATSAbsent of a connection that reached no server.
const NeverConnected = "never reached a server"

// PolicyFor builds the policy of the proxy's ats config section.
func PolicyFor(minVersion string, forwardSecrecy bool) (Policy, error) {
	p := DefaultPolicy()
	v, ok := tlsVersionValues[minVersion]
	if !ok {
		return p, fmt.Errorf("ats: minimum version %q is not TLSv1.0-TLSv1.3", minVersion)
	}
	p.MinTLSVersion, p.RequireForwardSecrecy = v, forwardSecrecy
	if v != DefaultPolicy().MinTLSVersion || !forwardSecrecy {
		p.Name = fmt.Sprintf("ats-custom(min=%s,forward_secrecy=%t)", minVersion, forwardSecrecy)
	}
	return p, nil
}
