package ats

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/inspectproxy/inspectproxy/event"
)

// resolution is how an app's dictionary applies to one host.
type resolution struct {
	policy Policy
	// domain is the NSExceptionDomains entry in force, or nil.
	domain *DomainException
	// global names the global key that turned ATS off for the host.
	global string
	// notes say why keys that look relevant do not apply.
	notes []string
}

// resolve applies Apple's precedence: a matching NSExceptionDomains entry
// replaces every global key for its hosts, even when empty; then
// NSAllowsLocalNetworking for local hosts; then NSAllowsArbitraryLoads,
// unless a finer global key is present at all.
func (a *AppPolicy) resolve(host string) resolution {
	if d := a.lookup(host); d != nil {
		r := resolution{domain: d, policy: Policy{
			MinTLSVersion:         d.minVersion,
			RequireForwardSecrecy: d.RequiresForwardSecrecy,
			AllowInsecureHTTP:     d.AllowsInsecureHTTPLoads,
			RequireCT:             d.RequiresCertificateTransparency,
		}}
		if on(a.AllowsArbitraryLoads) || on(a.AllowsLocalNetworking) {
			r.notes = append(r.notes, fmt.Sprintf("%s[%s] replaces the global keys for this host", keyExceptionDomains, d.Name))
		}
		return r
	}
	off := Policy{Disabled: true}
	if on(a.AllowsLocalNetworking) && isLocal(host) {
		return resolution{policy: off, global: keyLocalNetworking}
	}
	r := resolution{policy: DefaultPolicy()}
	if on(a.AllowsArbitraryLoads) {
		k := a.arbitraryOverride()
		if k == "" {
			return resolution{policy: off, global: keyArbitraryLoads}
		}
		r.notes = append(r.notes, fmt.Sprintf("%s=YES is ignored because %s is present", keyArbitraryLoads, k))
	}
	for _, k := range []struct {
		key string
		val *bool
	}{{keyArbitraryInWebContent, a.AllowsArbitraryLoadsInWebContent}, {keyArbitraryForMedia, a.AllowsArbitraryLoadsForMedia}} {
		if on(k.val) {
			r.notes = append(r.notes, k.key+"=YES covers only web-view or AVFoundation loads, which a proxy cannot tell apart, so it is not applied")
		}
	}
	return r
}

// lookup finds the NSExceptionDomains entry for host: for an IP address the
// longest matching prefix; for a name the exact entry, else the nearest
// parent entry with NSIncludesSubdomains (at any depth, as Apple's code does).
func (a *AppPolicy) lookup(host string) *DomainException {
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		var best *DomainException
		for _, d := range a.Domains {
			if !d.ignored && d.prefix.IsValid() && d.prefix.Contains(ip) && (best == nil || d.prefix.Bits() > best.prefix.Bits()) {
				best = d
			}
		}
		return best
	}
	for name, exact := host, true; ; exact = false {
		for _, d := range a.Domains {
			if !d.ignored && !d.prefix.IsValid() && d.Name == name && (exact || d.IncludesSubdomains) {
				return d
			}
		}
		i := strings.IndexByte(name, '.')
		if i < 0 || i == len(name)-1 {
			return nil
		}
		name = name[i+1:]
	}
}

// key names one key of the entry as the file spells it, with its value.
func (d *DomainException) key(k, value string) string {
	return fmt.Sprintf("%s[%s].%s=%s", keyExceptionDomains, d.Name, d.written[k], value)
}

// keyFor names the key of r that lifted rule.
func (r resolution) keyFor(rule string) string {
	switch {
	case r.global != "":
		return r.global + "=YES"
	case r.domain == nil:
		return ""
	}
	switch rule {
	case RuleCleartextHTTP:
		return r.domain.key(keyInsecureHTTP, "YES")
	case RuleMinTLSVersion:
		return r.domain.key(keyMinTLS, r.domain.MinimumTLSVersion)
	case RuleForwardSecrecy, RuleCertKeySize:
		return r.domain.key(keyForwardSecrecy, "NO")
	}
	return ""
}

// loadVerdict is the app's verdict on one load.
type loadVerdict struct {
	res result
	// base is the load under default ATS, to see what the app relaxed.
	base   result
	domain string
	keys   []string
	reason string
}

func (v loadVerdict) allowed() bool {
	return len(v.res.violations) == 0 && len(v.res.unknown) == 0
}

func (a *AppPolicy) evaluateLoad(l load) loadVerdict {
	r := a.resolve(l.host)
	v := loadVerdict{res: check(l, r.policy), base: check(l, DefaultPolicy())}
	if r.domain != nil {
		v.domain = r.domain.Name
	}
	still := map[string]bool{}
	for _, x := range slices.Concat(v.res.violations, v.res.unknown) {
		still[x.Rule] = true
	}
	for _, x := range slices.Concat(v.base.violations, v.base.unknown) {
		if k := r.keyFor(x.Rule); !still[x.Rule] && k != "" && !slices.Contains(v.keys, k) {
			v.keys = append(v.keys, k)
		}
	}
	v.reason = r.explain(v)
	return v
}

func (r resolution) explain(v loadVerdict) string {
	switch {
	case v.allowed() && len(v.keys) > 0:
		return "allowed by " + strings.Join(v.keys, ", ")
	case v.allowed() && r.domain != nil:
		return fmt.Sprintf("meets %s[%s]", keyExceptionDomains, r.domain.Name)
	case v.allowed():
		return "meets default ATS"
	}
	var parts []string
	if len(v.res.violations) > 0 {
		parts = append(parts, "blocked: "+strings.Join(rules(v.res.violations), ", "))
	} else {
		var unseen []string
		for _, u := range v.res.unknown {
			unseen = append(unseen, u.Rule+" ("+u.Detail+")")
		}
		parts = append(parts, "not established, facts not seen: "+strings.Join(unseen, ", "))
	}
	if r.domain != nil && r.domain.AllowsInsecureHTTPLoads && slices.Contains(rules(v.res.violations), RuleCertTrust) {
		// Apple: the key lets the app loosen trust in its own delegate,
		// but does not change the default trust evaluation.
		parts = append(parts, r.domain.key(keyInsecureHTTP, "YES")+" lets the app's own trust handler accept this chain; default trust refuses it")
	}
	return strings.Join(append(parts, r.notes...), "; ")
}

func rules(vs []event.Violation) []string {
	var out []string
	for _, v := range vs {
		if !slices.Contains(out, v.Rule) {
			out = append(out, v.Rule)
		}
	}
	return out
}

// Evaluate says whether the app's NSAppTransportSecurity allows the
// connection, and which key allowed it when a rule was relaxed. Facts not
// seen leave Allowed false with Reason saying which.
func (a *AppPolicy) Evaluate(ev *event.Event) *event.AppVerdict { return a.evaluate(loadsOf(ev)) }

func (a *AppPolicy) evaluate(loads []load) *event.AppVerdict {
	out := &event.AppVerdict{Allowed: true}
	var domains, keys, reasons []string
	for _, l := range loads {
		v := a.evaluateLoad(l)
		out.Allowed = out.Allowed && v.allowed()
		out.Violations = append(out.Violations, v.res.violations...)
		out.Unknown = append(out.Unknown, v.res.unknown...)
		if v.domain != "" && !slices.Contains(domains, v.domain) {
			domains = append(domains, v.domain)
		}
		for _, k := range v.keys {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		if len(loads) > 1 {
			v.reason = l.host + ": " + v.reason
		}
		reasons = append(reasons, v.reason)
	}
	out.Domain = strings.Join(domains, ", ")
	out.Key = strings.Join(keys, ", ")
	out.Reason = strings.Join(reasons, "; ")
	return out
}
