package ats

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/outcome"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// Report is the ATS audit of a capture: per domain what was seen, what an
// Info.plist would need, and which of the app's exceptions nothing needed.
type Report struct {
	Policy      string `json:"policy"`
	AppPolicy   string `json:"app_policy,omitempty"`
	Connections int    `json:"connections"`
	// NeverConnected counts, by failure class (dns, refused, proxy_refused,
	// no_request, ...), the connections that reached no server: ATS has
	// nothing to judge there, so they are in no domain.
	NeverConnected map[string]int `json:"never_connected,omitempty"`
	// NeverConnectedHosts lists, per class, up to 5 of their targets.
	NeverConnectedHosts map[string][]string `json:"never_connected_hosts,omitempty"`
	// Filter describes the scope the audit was limited to, if any.
	Filter string `json:"filter,omitempty"`
	// Lost counts events the proxy could not write (gap records).
	Lost int64 `json:"lost_events,omitempty"`
	// SkippedLines counts input lines that could not be decoded; Skipped
	// holds the first maxSkipped of their errors (a file of junk must not
	// become a report, or a heap, of its size).
	SkippedLines int             `json:"skipped_lines,omitempty"`
	Skipped      []string        `json:"skipped,omitempty"`
	Domains      []*DomainReport `json:"domains"`
	OverBroad    []OverBroad     `json:"over_broad,omitempty"`
	// Warnings are the Info.plist's caveats.
	Warnings []string `json:"warnings,omitempty"`
}

// DomainReport is one host of the capture.
type DomainReport struct {
	Domain      string `json:"domain"`
	Connections int    `json:"connections"`
	// Compliant, NonCompliant and Unknown count connections under default ATS.
	Compliant    int         `json:"compliant"`
	NonCompliant int         `json:"non_compliant"`
	Unknown      int         `json:"unknown"`
	Violations   []RuleCount `json:"violations,omitempty"`
	Unseen       []RuleCount `json:"unknown_facts,omitempty"`
	App          *AppSummary `json:"app,omitempty"`
	// Needed is the smallest NSExceptionDomains entry under which every
	// connection seen passes, nil when none is needed.
	Needed *Exception `json:"needed_exception,omitempty"`
	// Unfixable are violations no NSExceptionDomains key lifts.
	Unfixable []string `json:"unfixable,omitempty"`
	// Note says when facts were missing, so more may be needed.
	Note string `json:"note,omitempty"`

	need need
}

// RuleCount counts the connections that broke (or left unknown) one rule.
type RuleCount struct {
	Rule    string `json:"rule"`
	Count   int    `json:"count"`
	Example string `json:"example"`
}

// AppSummary is how the app's Info.plist treats a domain's connections.
type AppSummary struct {
	Entry   string   `json:"entry,omitempty"` // the NSExceptionDomains entry in force
	Allowed int      `json:"allowed"`
	Blocked int      `json:"blocked"`
	Unknown int      `json:"unknown"`
	Keys    []string `json:"keys,omitempty"` // keys that allowed connections
}

// Exception is an NSExceptionDomains entry, as keys and as plist XML.
type Exception struct {
	Domain   string         `json:"domain"`
	Keys     map[string]any `json:"keys"`
	PlistXML string         `json:"plist_xml"`
}

// OverBroad is an exception in the Info.plist that the capture did not need.
type OverBroad struct {
	Key string `json:"key"`
	// Finding is "unused", "broader" (than the capture needed) or
	// "unconfirmed" (facts were missing or a proxy cannot see the case).
	Finding string `json:"finding"`
	Detail  string `json:"detail"`
}

// Findings of OverBroad.
const (
	FindingUnused      = "unused"
	FindingBroader     = "broader"
	FindingUnconfirmed = "unconfirmed"
)

// need is what a set of connections needs from an exception.
type need struct {
	insecureHTTP, forwardSecrecy bool
	lowest                       uint16 // lowest version under TLS 1.2 seen, 0 if none
	unfixable                    []string
	// atsOff: a violation only turning ATS off lifts (cipher, signature hash).
	atsOff bool
	// Rules left unknown, so the need may be larger.
	httpUnseen, versionUnseen, fsUnseen bool
	hosts                               []string
}

func (n *need) add(l load, r result) {
	if !slices.Contains(n.hosts, l.host) {
		n.hosts = append(n.hosts, l.host)
	}
	for _, v := range r.violations {
		switch v.Rule {
		case RuleCleartextHTTP:
			n.insecureHTTP = true
		case RuleForwardSecrecy:
			n.forwardSecrecy = true
		case RuleCertKeySize:
			n.forwardSecrecy = true
			if l.tls != nil && len(l.tls.Chain) > 0 && l.tls.Chain[0].KeyType == "RSA" {
				// The exception lifts ATS's check, but iOS 13+ trust still
				// refuses RSA keys under 2048 bits.
				n.addUnfixable(v.Rule + " (RSA under 2048 bits: iOS 13+ trust refuses it whatever the plist says)")
			}
		case RuleMinTLSVersion:
			if ver := l.tls.VersionCode; ver < tls.VersionTLS10 {
				n.addUnfixable(v.Rule + " (" + l.tls.Version + ": no exception allows it)")
			} else if n.lowest == 0 || ver < n.lowest {
				n.lowest = ver
			}
		case RuleCipher, RuleCertSignatureHash:
			n.atsOff = true
			n.addUnfixable(v.Rule)
		default:
			n.addUnfixable(v.Rule)
		}
	}
	for _, u := range r.unknown {
		switch u.Rule {
		case RuleCleartextHTTP:
			n.httpUnseen = true
		case RuleMinTLSVersion:
			n.versionUnseen = true
		case RuleForwardSecrecy, RuleCertKeySize:
			n.fsUnseen = true
		}
	}
}

func (n *need) addUnfixable(s string) {
	if !slices.Contains(n.unfixable, s) {
		n.unfixable = append(n.unfixable, s)
	}
}

func (n need) any() bool { return n.insecureHTTP || n.forwardSecrecy || n.lowest != 0 }

func (n need) unseen() bool { return n.httpUnseen || n.versionUnseen || n.fsUnseen }

// exception is the smallest entry for domain meeting n; nil if none.
func (n need) exception(domain string) *Exception {
	if !n.any() {
		return nil
	}
	e := &Exception{Domain: domain, Keys: map[string]any{}}
	var b strings.Builder
	fmt.Fprintf(&b, "<key>%s</key>\n<dict>\n", xmlText(domain))
	if n.insecureHTTP {
		e.Keys[keyInsecureHTTP] = true
		fmt.Fprintf(&b, "\t<key>%s</key>\n\t<true/>\n", keyInsecureHTTP)
	}
	if n.lowest != 0 {
		e.Keys[keyMinTLS] = plistVersion(n.lowest)
		fmt.Fprintf(&b, "\t<key>%s</key>\n\t<string>%s</string>\n", keyMinTLS, plistVersion(n.lowest))
	}
	if n.forwardSecrecy {
		e.Keys[keyForwardSecrecy] = false
		fmt.Fprintf(&b, "\t<key>%s</key>\n\t<false/>\n", keyForwardSecrecy)
	}
	b.WriteString("</dict>\n")
	e.PlistXML = b.String()
	return e
}

func xmlText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// maxSkipped is how many undecodable lines a report quotes.
const maxSkipped = 10

// BuildReport reads events from next until io.EOF and audits them against
// default ATS and, when app is not nil, the app's Info.plist. Lines that do
// not decode are skipped and listed; any other error stops the report.
func BuildReport(next func() (*event.Event, error), app *AppPolicy) (*Report, error) {
	rep := &Report{Policy: DefaultPolicy().Name}
	byHost := map[string]*DomainReport{}
	entryNeeds := map[*DomainException]*need{}
	globalNeeds := map[string]*need{}
	for {
		ev, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if event.IsLineError(err) {
				if rep.SkippedLines++; len(rep.Skipped) < maxSkipped {
					rep.Skipped = append(rep.Skipped, err.Error())
				}
				continue
			}
			return nil, fmt.Errorf("ats: report: %w", err)
		}
		switch ev.Kind {
		case event.KindGap:
			rep.Lost += ev.Dropped
			continue
		case event.KindDNS, event.KindUDP:
			continue
		}
		oc := outcome.Of(ev)
		if oc.ByProxy() {
			continue // the setup page: nothing an app loads
		}
		rep.Connections++
		if !oc.Reached {
			rep.neverConnected(ev.Target, oc.Reason)
			continue
		}
		for _, l := range reachedLoads(ev) { // !oc.Reached went on above
			d := byHost[l.host]
			if d == nil {
				d = &DomainReport{Domain: l.host}
				byHost[l.host] = d
			}
			base := check(l, DefaultPolicy())
			d.add(base)
			d.need.add(l, base)
			if app == nil {
				continue
			}
			v := app.evaluateLoad(l)
			d.addApp(v)
			r := app.resolve(l.host)
			switch {
			case r.domain != nil:
				needOf(entryNeeds, r.domain).add(l, base)
			case r.global != "":
				needOf(globalNeeds, r.global).add(l, base)
			}
		}
	}
	for _, d := range byHost {
		d.Needed = d.need.exception(d.Domain)
		d.Unfixable = d.need.unfixable
		if d.need.unseen() {
			d.Note = "some facts were not seen: more exceptions may be needed"
		}
		rep.Domains = append(rep.Domains, d)
	}
	slices.SortFunc(rep.Domains, func(a, b *DomainReport) int { return strings.Compare(a.Domain, b.Domain) })
	if app != nil {
		rep.AppPolicy = app.Source
		if rep.AppPolicy == "" {
			rep.AppPolicy = "Info.plist"
		}
		rep.Warnings = app.Warnings
		rep.OverBroad = app.overBroad(entryNeeds, globalNeeds)
	}
	return rep, nil
}

func (r *Report) neverConnected(target, reason string) {
	if r.NeverConnected == nil {
		r.NeverConnected, r.NeverConnectedHosts = map[string]int{}, map[string][]string{}
	}
	r.NeverConnected[reason]++
	if target == "" {
		return
	}
	if hs := r.NeverConnectedHosts[reason]; len(hs) < 5 && !slices.Contains(hs, target) {
		r.NeverConnectedHosts[reason] = append(hs, target)
	}
}

// neverTotal is how many connections reached no server.
func (r *Report) neverTotal() int {
	n := 0
	for _, c := range r.NeverConnected {
		n += c
	}
	return n
}

// neverOrder lists the classes of never-connected connections seen, in
// outcome.Classes order.
func neverOrder(r *Report) []string {
	var out []string
	for _, c := range outcome.Classes() {
		if r.NeverConnected[c] > 0 {
			out = append(out, c)
		}
	}
	return out
}

// neverLines are the text lines of the never-connected counts by class.
func (r *Report) neverLines() []string {
	var out []string
	for _, c := range neverOrder(r) {
		n := r.NeverConnected[c]
		s := fmt.Sprintf("%-13s %3d", c, n)
		if hs := r.NeverConnectedHosts[c]; len(hs) > 0 {
			s += "  e.g. " + strings.Join(hs, ", ")
		}
		out = append(out, s)
	}
	return out
}

func needOf[K comparable](m map[K]*need, k K) *need {
	n := m[k]
	if n == nil {
		n = &need{}
		m[k] = n
	}
	return n
}

func (d *DomainReport) add(r result) {
	d.Connections++
	switch compliance(r.violations, r.unknown) {
	case Yes:
		d.Compliant++
	case No:
		d.NonCompliant++
	default:
		d.Unknown++
	}
	d.Violations = countRules(d.Violations, r.violations)
	d.Unseen = countRules(d.Unseen, r.unknown)
}

func (d *DomainReport) addApp(v loadVerdict) {
	if d.App == nil {
		d.App = &AppSummary{}
	}
	s := d.App
	switch {
	case v.allowed():
		s.Allowed++
	case len(v.res.violations) > 0:
		s.Blocked++
	default:
		s.Unknown++
	}
	if v.domain != "" {
		s.Entry = fmt.Sprintf("%s[%s]", keyExceptionDomains, v.domain)
	}
	if v.allowed() {
		for _, k := range v.keys {
			if !slices.Contains(s.Keys, k) {
				s.Keys = append(s.Keys, k)
			}
		}
	}
}

// countRules adds one connection's violations to counts, kept in RuleIDs order.
func countRules(counts []RuleCount, vs []event.Violation) []RuleCount {
	for _, rule := range rules(vs) {
		i := slices.IndexFunc(counts, func(c RuleCount) bool { return c.Rule == rule })
		if i < 0 {
			example := vs[slices.IndexFunc(vs, func(v event.Violation) bool { return v.Rule == rule })].Detail
			counts = append(counts, RuleCount{Rule: rule, Example: example})
			i = len(counts) - 1
		}
		counts[i].Count++
	}
	slices.SortStableFunc(counts, func(a, b RuleCount) int {
		return slices.Index(RuleIDs(), a.Rule) - slices.Index(RuleIDs(), b.Rule)
	})
	return counts
}

// overBroad lists the app's exceptions the capture did not need.
func (a *AppPolicy) overBroad(entries map[*DomainException]*need, globals map[string]*need) []OverBroad {
	var out []OverBroad
	add := func(key, finding, detail string) {
		out = append(out, OverBroad{Key: key, Finding: finding, Detail: detail})
	}
	for _, d := range a.Domains {
		entry := fmt.Sprintf("%s[%s]", keyExceptionDomains, d.Name)
		n := entries[d]
		if n == nil {
			if !d.ignored {
				scope := d.Name
				if d.IncludesSubdomains {
					scope += " or its subdomains"
				}
				add(entry, FindingUnused, "no connection to "+scope)
			}
			continue
		}
		if d.IncludesSubdomains && len(n.hosts) == 1 && n.hosts[0] == d.Name {
			add(d.key(keyIncludesSubdomains, "YES"), FindingBroader, "only "+d.Name+" itself was seen")
		}
		if d.AllowsInsecureHTTPLoads && !n.insecureHTTP {
			judge(add, d.key(keyInsecureHTTP, "YES"), n.httpUnseen, "no plain-HTTP load was seen")
		}
		if d.minVersion != 0 && d.minVersion < tls.VersionTLS12 {
			switch {
			case n.lowest == 0:
				judge(add, d.key(keyMinTLS, d.MinimumTLSVersion), n.versionUnseen, "every connection used TLS 1.2 or later")
			case n.lowest > d.minVersion:
				judge(add, d.key(keyMinTLS, d.MinimumTLSVersion), n.versionUnseen,
					fmt.Sprintf("the lowest version seen is %s: %s suffices", tlsinfo.VersionName(n.lowest), plistVersion(n.lowest)))
			}
		}
		if !d.RequiresForwardSecrecy && !n.forwardSecrecy {
			judge(add, d.key(keyForwardSecrecy, "NO"), n.fsUnseen, "every connection had forward secrecy and a large enough key")
		}
	}
	for _, g := range []string{keyArbitraryLoads, keyLocalNetworking} {
		if n := globals[g]; n != nil && !n.atsOff {
			if n.any() {
				judge(add, g+"=YES", n.unseen(), "hosts relying on it ("+strings.Join(n.hosts, ", ")+") need only the NSExceptionDomains entries shown for them")
			} else {
				judge(add, g+"=YES", n.unseen(), "no connection under it ("+strings.Join(n.hosts, ", ")+") needed a rule lifted")
			}
		}
	}
	if on(a.AllowsArbitraryLoads) && globals[keyArbitraryLoads] == nil {
		if k := a.arbitraryOverride(); k != "" {
			add(keyArbitraryLoads+"=YES", FindingUnused, "ignored because "+k+" is present")
		} else {
			add(keyArbitraryLoads+"=YES", FindingUnused, "no connection fell under it")
		}
	}
	if on(a.AllowsLocalNetworking) && globals[keyLocalNetworking] == nil {
		add(keyLocalNetworking+"=YES", FindingUnused, "no connection to a local name or IP address without an entry of its own")
	}
	for _, k := range []struct {
		key string
		val *bool
	}{{keyArbitraryInWebContent, a.AllowsArbitraryLoadsInWebContent}, {keyArbitraryForMedia, a.AllowsArbitraryLoadsForMedia}} {
		if on(k.val) {
			add(k.key+"=YES", FindingUnconfirmed, "a proxy cannot tell web-view or media loads apart")
		}
	}
	return out
}

// judge records key as broader than needed, or as unconfirmed when facts
// that might have needed it were not seen.
func judge(add func(key, finding, detail string), key string, unseen bool, detail string) {
	if unseen {
		add(key, FindingUnconfirmed, detail+", but some facts were not seen")
		return
	}
	add(key, FindingBroader, detail)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ATS report: %s, %s, policy %s", plural(r.Connections, "connection"), plural(len(r.Domains), "domain"), r.Policy)
	if r.AppPolicy != "" {
		fmt.Fprintf(&b, ", app policy %s", r.AppPolicy)
	}
	b.WriteString("\n")
	if r.Filter != "" {
		fmt.Fprintf(&b, "filtered: %s\n", r.Filter)
	}
	if r.Lost > 0 {
		fmt.Fprintf(&b, "lost: %d events the proxy could not write are not audited\n", r.Lost)
	}
	if r.SkippedLines > 0 {
		fmt.Fprintf(&b, "skipped: %s", plural(r.SkippedLines, "undecodable line"))
		if r.SkippedLines > len(r.Skipped) {
			fmt.Fprintf(&b, "; the first %d", len(r.Skipped))
		}
		b.WriteString(":\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	if n := r.neverTotal(); n > 0 {
		fmt.Fprintf(&b, "never connected: %d, by reason (no ATS verdict: no server was reached)\n", n)
		for _, l := range r.neverLines() {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	for _, d := range r.Domains {
		fmt.Fprintf(&b, "\n%s: %s (%d compliant, %d not, %d unknown)\n",
			d.Domain, plural(d.Connections, "connection"), d.Compliant, d.NonCompliant, d.Unknown)
		writeCounts(&b, "violations", d.Violations)
		writeCounts(&b, "unknown", d.Unseen)
		if s := d.App; s != nil {
			fmt.Fprintf(&b, "  app: %d allowed, %d blocked, %d unknown", s.Allowed, s.Blocked, s.Unknown)
			if s.Entry != "" {
				fmt.Fprintf(&b, "; entry %s", s.Entry)
			}
			if len(s.Keys) > 0 {
				fmt.Fprintf(&b, "; allowed by %s", strings.Join(s.Keys, ", "))
			}
			b.WriteString("\n")
		}
		if e := d.Needed; e != nil {
			b.WriteString("  needed exception:\n")
			b.WriteString(indent(e.PlistXML, "    ")) // it ends in "</dict>\n"
		} else if len(d.Unfixable) == 0 {
			b.WriteString("  needed exception: none\n")
		}
		if len(d.Unfixable) > 0 {
			fmt.Fprintf(&b, "  no NSExceptionDomains key fixes: %s\n", strings.Join(d.Unfixable, ", "))
		}
		if d.Note != "" {
			fmt.Fprintf(&b, "  note: %s\n", d.Note)
		}
	}
	if len(r.OverBroad) > 0 {
		b.WriteString("\nover-broad exceptions:\n")
		for _, o := range r.OverBroad {
			fmt.Fprintf(&b, "  %-11s %s: %s\n", o.Finding, o.Key, o.Detail)
		}
	}
	if len(r.Warnings) > 0 {
		b.WriteString("\nInfo.plist warnings:\n")
		for _, s := range r.Warnings {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func writeCounts(b *strings.Builder, title string, counts []RuleCount) {
	if len(counts) == 0 {
		return
	}
	fmt.Fprintf(b, "  %s:\n", title)
	for _, c := range counts {
		fmt.Fprintf(b, "    %-26s %3d  e.g. %s\n", c.Rule, c.Count, c.Example)
	}
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
