package ats

import (
	"fmt"

	"github.com/inspectproxy/inspectproxy/event"
)

// Checker puts the ATS verdict, and the app's when a plist is given, into
// every event the proxy writes.
type Checker struct {
	Policy Policy
	App    *AppPolicy // optional
}

// Check sets ev.ATS.
func (c Checker) Check(ev *event.Event) {
	ev.ATS = Evaluate(ev, c.Policy)
	if c.App != nil {
		ev.ATS.App = c.App.Evaluate(ev)
	}
}

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
