// Package scope decides which connections are recorded and reported: host
// glob lists (the proxy's capture.only_hosts and capture.ignore_hosts) and
// the report filters (client network, hosts, time range, kind, failures,
// known OS background hosts). One matcher serves the proxy and the
// readers, so "*.apple.com" means the same in both.
package scope

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/outcome"
)

// Globs is a list of host patterns in path.Match syntax, matched without
// case: "*.example.com" matches a.example.com and a.b.example.com (a "*"
// crosses dots) but not example.com itself. A pattern with a ":" is
// matched against host:port, any other against the host alone.
type Globs []string

// ValidateGlobs checks every pattern of a list named key (a config key or
// flag), naming the key and the pattern at fault.
func ValidateGlobs(key string, pats []string) error {
	for _, p := range pats {
		if p == "" {
			return fmt.Errorf("%s: an empty pattern matches nothing", key)
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("%s: pattern %q: %w", key, p, err)
		}
	}
	return nil
}

// Match reports whether target (host or host:port) matches a pattern.
func (g Globs) Match(target string) bool {
	target = strings.ToLower(target)
	host := target
	if h, _, err := net.SplitHostPort(target); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	for _, p := range g {
		subject := host
		if strings.Contains(p, ":") {
			subject = target
		}
		if ok, _ := path.Match(strings.ToLower(p), subject); ok {
			return true
		}
	}
	return false
}

// Hosts is the proxy's capture scope: a host is recorded when it matches
// Only (or Only is empty) and does not match Ignore.
type Hosts struct {
	Only, Ignore Globs
}

// Recorded reports whether connections to target are recorded.
func (h Hosts) Recorded(target string) bool {
	if len(h.Only) > 0 && !h.Only.Match(target) {
		return false
	}
	return !h.Ignore.Match(target)
}

// Failed selects connections by outcome.
type Failed int

const (
	AllOutcomes Failed = iota
	FailedOnly
	NoFailed
)

// Filter selects events for a report. The zero Filter keeps everything.
type Filter struct {
	// Clients keeps connections from these networks (the phone).
	Clients []netip.Prefix
	// Hosts keeps connections whose target matches; ExcludeHosts drops them.
	Hosts, ExcludeHosts Globs
	// Since and Until keep connections that started in [Since, Until).
	Since, Until time.Time
	// Kinds keeps these event kinds.
	Kinds  []string
	Failed Failed
	// Noise names OS background lists (see NoiseLists) whose hosts are dropped.
	Noise []string
}

// NoiseLists are hosts that operating systems and browsers contact on
// their own (connectivity checks, push, updates, telemetry, safe
// browsing), for an auditor to leave out of an app's audit with
// --exclude-os-noise. They are a starting point, not a guarantee: an app
// may use the same hosts (e.g. Firebase on googleapis.com), which is why
// the lists are opt-in and the report says which were applied.
var NoiseLists = map[string]Globs{
	"ios": {
		"*.apple.com", "apple.com", "*.icloud.com", "*.icloud-content.com", "*.mzstatic.com",
		"*.apple-cloudkit.com", "*.cdn-apple.com", "*.aaplimg.com", "*.apple.news", "*.itunes.com",
		"*.apple-dns.net", "*.push-apple.com.akadns.net",
	},
	"android": {
		"connectivitycheck.gstatic.com", "connectivitycheck.android.com", "android.clients.google.com",
		"android.googleapis.com", "play.googleapis.com", "play-fe.googleapis.com", "mtalk.google.com",
		"time.android.com", "*.gvt1.com", "*.gvt2.com", "*.gvt3.com", "www.google.com",
		"clients*.google.com", "firebaseinstallations.googleapis.com", "digitalassetlinks.googleapis.com",
	},
	"chrome": {
		"clients*.google.com", "update.googleapis.com", "clientservices.googleapis.com",
		"safebrowsing.googleapis.com", "optimizationguide-pa.googleapis.com",
		"content-autofill.googleapis.com", "accounts.google.com", "www.googleapis.com",
		"*.gvt1.com", "*.gvt2.com", "redirector.gvt1.com", "edgedl.me.gvt1.com",
		"android.clients.google.com", "chromewebstore.googleapis.com",
	},
}

// NoiseNames are the keys of NoiseLists, sorted.
func NoiseNames() []string {
	var names []string
	for k := range NoiseLists {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// Validate checks the filter's lists, naming the flag at fault.
func (f *Filter) Validate() error {
	if err := ValidateGlobs("--host", f.Hosts); err != nil {
		return err
	}
	if err := ValidateGlobs("--exclude-host", f.ExcludeHosts); err != nil {
		return err
	}
	for _, n := range f.Noise {
		if _, ok := NoiseLists[n]; !ok {
			return fmt.Errorf("--exclude-os-noise %q: want one of %s", n, strings.Join(NoiseNames(), ", "))
		}
	}
	for _, k := range f.Kinds {
		switch k {
		case event.KindTunnel, event.KindMITM, event.KindHTTP, event.KindDNS, event.KindUDP:
		default:
			return fmt.Errorf("--kind %q: want tunnel, mitm, http, dns or udp", k)
		}
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return fmt.Errorf("--since %s is not before --until %s", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	}
	return nil
}

// Active reports whether the filter drops anything.
func (f *Filter) Active() bool {
	return len(f.Clients) > 0 || len(f.Hosts) > 0 || len(f.ExcludeHosts) > 0 || !f.Since.IsZero() ||
		!f.Until.IsZero() || len(f.Kinds) > 0 || f.Failed != AllOutcomes || len(f.Noise) > 0
}

// Keep reports whether ev is in the filter's scope. Gap records are
// always kept: they say what the file lost, whatever the scope.
func (f *Filter) Keep(ev *event.Event) bool {
	if ev.Kind == event.KindGap {
		return true
	}
	if len(f.Kinds) > 0 && !slices.Contains(f.Kinds, ev.Kind) {
		return false
	}
	if !f.Since.IsZero() && ev.Start.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !ev.Start.Before(f.Until) {
		return false
	}
	if len(f.Clients) > 0 && !inPrefixes(f.Clients, ev.Client) {
		return false
	}
	if len(f.Hosts) > 0 && !f.Hosts.Match(ev.Target) {
		return false
	}
	if f.ExcludeHosts.Match(ev.Target) {
		return false
	}
	for _, n := range f.Noise {
		if NoiseLists[n].Match(ev.Target) {
			return false
		}
	}
	switch f.Failed {
	case FailedOnly:
		return outcome.Of(ev).Failed()
	case NoFailed:
		return !outcome.Of(ev).Failed()
	}
	return true
}

func inPrefixes(ps []netip.Prefix, client string) bool {
	ap, err := netip.ParseAddrPort(client)
	var a netip.Addr
	if err == nil {
		a = ap.Addr()
	} else if a, err = netip.ParseAddr(client); err != nil {
		return false
	}
	a = a.Unmap()
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// String describes the filter for a report's header; "" when inactive.
func (f *Filter) String() string {
	var parts []string
	if len(f.Clients) > 0 {
		var cs []string
		for _, p := range f.Clients {
			cs = append(cs, p.String())
		}
		parts = append(parts, "client "+strings.Join(cs, ","))
	}
	if len(f.Hosts) > 0 {
		parts = append(parts, "host "+strings.Join(f.Hosts, ","))
	}
	if len(f.ExcludeHosts) > 0 {
		parts = append(parts, "not host "+strings.Join(f.ExcludeHosts, ","))
	}
	if len(f.Noise) > 0 {
		parts = append(parts, "without OS background hosts ("+strings.Join(f.Noise, ",")+")")
	}
	if !f.Since.IsZero() {
		parts = append(parts, "since "+f.Since.UTC().Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		parts = append(parts, "until "+f.Until.UTC().Format(time.RFC3339))
	}
	if len(f.Kinds) > 0 {
		parts = append(parts, "kind "+strings.Join(f.Kinds, ","))
	}
	switch f.Failed {
	case FailedOnly:
		parts = append(parts, "failed only")
	case NoFailed:
		parts = append(parts, "no failed")
	}
	return strings.Join(parts, "; ")
}
