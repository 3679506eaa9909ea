package ats

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"

	"howett.net/plist"
)

// ErrInvalidPlist is wrapped by every error about an unreadable Info.plist.
var ErrInvalidPlist = errors.New("ats: invalid Info.plist")

// Info.plist keys.
const (
	keyATS                   = "NSAppTransportSecurity"
	keyArbitraryLoads        = "NSAllowsArbitraryLoads"
	keyArbitraryForMedia     = "NSAllowsArbitraryLoadsForMedia"
	keyArbitraryInWebContent = "NSAllowsArbitraryLoadsInWebContent"
	keyLocalNetworking       = "NSAllowsLocalNetworking"
	keyExceptionDomains      = "NSExceptionDomains"
	keyPinnedDomains         = "NSPinnedDomains"
	keyIncludesSubdomains    = "NSIncludesSubdomains"
	keyInsecureHTTP          = "NSExceptionAllowsInsecureHTTPLoads"
	keyMinTLS                = "NSExceptionMinimumTLSVersion"
	keyForwardSecrecy        = "NSExceptionRequiresForwardSecrecy"
	keyCT                    = "NSRequiresCertificateTransparency"
)

// legacyKeys maps the pre-iOS 9 GM key names to the keys that replaced them.
var legacyKeys = map[string]string{
	"NSTemporaryExceptionAllowsInsecureHTTPLoads":  keyInsecureHTTP,
	"NSTemporaryExceptionMinimumTLSVersion":        keyMinTLS,
	"NSTemporaryExceptionRequiresForwardSecrecy":   keyForwardSecrecy,
	"NSThirdPartyExceptionAllowsInsecureHTTPLoads": keyInsecureHTTP,
	"NSThirdPartyExceptionMinimumTLSVersion":       keyMinTLS,
	"NSThirdPartyExceptionRequiresForwardSecrecy":  keyForwardSecrecy,
}

// tlsVersionValues are the values NSExceptionMinimumTLSVersion accepts.
var tlsVersionValues = map[string]uint16{
	"TLSv1.0": tls.VersionTLS10,
	"TLSv1.1": tls.VersionTLS11,
	"TLSv1.2": tls.VersionTLS12,
	"TLSv1.3": tls.VersionTLS13,
}

// plistVersion is the NSExceptionMinimumTLSVersion value for v.
func plistVersion(v uint16) string {
	for s, n := range tlsVersionValues {
		if n == v {
			return s
		}
	}
	return ""
}

// AppPolicy is an app's NSAppTransportSecurity dictionary.
type AppPolicy struct {
	// Source names the file, for messages.
	Source string `json:"source,omitempty"`
	// The global keys; nil is an absent key, which matters: the mere
	// presence of the last three disables NSAllowsArbitraryLoads.
	AllowsArbitraryLoads             *bool `json:"NSAllowsArbitraryLoads,omitempty"`
	AllowsArbitraryLoadsForMedia     *bool `json:"NSAllowsArbitraryLoadsForMedia,omitempty"`
	AllowsArbitraryLoadsInWebContent *bool `json:"NSAllowsArbitraryLoadsInWebContent,omitempty"`
	AllowsLocalNetworking            *bool `json:"NSAllowsLocalNetworking,omitempty"`
	// Domains are the NSExceptionDomains entries, sorted by name.
	Domains []*DomainException `json:"NSExceptionDomains,omitempty"`
	// Warnings are keys read with a caveat or ignored.
	Warnings []string `json:"warnings,omitempty"`
}

// DomainException is one NSExceptionDomains entry.
type DomainException struct {
	Name                            string `json:"name"`
	IncludesSubdomains              bool   `json:"NSIncludesSubdomains,omitempty"`
	AllowsInsecureHTTPLoads         bool   `json:"NSExceptionAllowsInsecureHTTPLoads,omitempty"`
	MinimumTLSVersion               string `json:"NSExceptionMinimumTLSVersion,omitempty"` // as written
	RequiresForwardSecrecy          bool   `json:"NSExceptionRequiresForwardSecrecy"`
	RequiresCertificateTransparency bool   `json:"NSRequiresCertificateTransparency,omitempty"`

	// written maps a key to its name in the file (a legacy alias, maybe).
	written map[string]string
	// minVersion is MinimumTLSVersion parsed; 0 when absent or unparseable.
	minVersion uint16
	// prefix is set for IP address and CIDR entries (iOS 17+).
	prefix netip.Prefix
	// ignored entries (bad names) are kept only to report them.
	ignored bool
}

// LoadPlist reads an Info.plist file, XML or binary.
func LoadPlist(path string) (*AppPolicy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPlist, err)
	}
	defer f.Close()
	a, err := ParsePlist(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a.Source = path
	return a, nil
}

// ParsePlist reads an Info.plist, XML or binary.
func ParsePlist(r io.ReadSeeker) (*AppPolicy, error) {
	var root map[string]any
	if err := plist.NewDecoder(r).Decode(&root); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPlist, err)
	}
	raw, ok := root[keyATS]
	if !ok {
		a := &AppPolicy{}
		a.warnf("no %s: default ATS applies to every host", keyATS)
		return a, nil
	}
	dict, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s is %s, not a dictionary", ErrInvalidPlist, keyATS, typeName(raw))
	}
	return fromDict(dict), nil
}

// fromDict reads an NSAppTransportSecurity dictionary.
func fromDict(dict map[string]any) *AppPolicy {
	a := &AppPolicy{}
	for _, k := range sortedKeys(dict) {
		v := dict[k]
		switch k {
		case keyArbitraryLoads:
			a.AllowsArbitraryLoads = a.boolKey(k, v)
		case keyArbitraryForMedia:
			a.AllowsArbitraryLoadsForMedia = a.boolKey(k, v)
		case keyArbitraryInWebContent:
			a.AllowsArbitraryLoadsInWebContent = a.boolKey(k, v)
		case keyLocalNetworking:
			a.AllowsLocalNetworking = a.boolKey(k, v)
		case keyExceptionDomains:
			domains, ok := v.(map[string]any)
			if !ok {
				a.warnf("%s is %s, not a dictionary: ignored", k, typeName(v))
				continue
			}
			for _, name := range sortedKeys(domains) {
				a.Domains = append(a.Domains, a.parseDomain(name, domains[name]))
			}
		case keyPinnedDomains:
			a.warnf("%s is not checked: a proxy cannot tell which certificate the app pins", k)
		default:
			a.warnf("%s: unknown key %s ignored", keyATS, k)
		}
	}
	if on(a.AllowsArbitraryLoads) {
		if k := a.arbitraryOverride(); k != "" {
			a.warnf("%s=YES is ignored because %s is present (iOS 10+)", keyArbitraryLoads, k)
		}
	}
	return a
}

func (a *AppPolicy) parseDomain(name string, v any) *DomainException {
	d := &DomainException{Name: name, RequiresForwardSecrecy: true, written: map[string]string{}}
	where := fmt.Sprintf("%s[%s]", keyExceptionDomains, name)
	if why := badDomainName(name); why != "" {
		a.warnf("%s: %s: entry never matches", where, why)
		d.ignored = true
	} else if p, err := netip.ParsePrefix(name); err == nil {
		d.prefix = p.Masked()
	} else if ip, err := netip.ParseAddr(name); err == nil {
		d.prefix = netip.PrefixFrom(ip, ip.BitLen())
	}
	dict, ok := v.(map[string]any)
	if !ok {
		a.warnf("%s is %s, not a dictionary: treated as empty", where, typeName(v))
		return d
	}
	for _, written := range sortedKeys(dict) {
		key := written
		if modern, ok := legacyKeys[written]; ok {
			if _, both := dict[modern]; both {
				a.warnf("%s: legacy %s ignored, %s is also present", where, written, modern)
				continue
			}
			a.warnf("%s: legacy key %s read as %s", where, written, modern)
			key = modern
		}
		val := dict[written]
		switch key {
		case keyIncludesSubdomains:
			d.IncludesSubdomains = on(a.boolKey(where+"."+written, val))
			if d.prefix.IsValid() && d.IncludesSubdomains {
				a.warnf("%s: %s has no effect on an IP address entry", where, written)
			}
		case keyInsecureHTTP:
			d.AllowsInsecureHTTPLoads = on(a.boolKey(where+"."+written, val))
		case keyForwardSecrecy:
			if b := a.boolKey(where+"."+written, val); b != nil {
				d.RequiresForwardSecrecy = *b
			}
		case keyCT:
			d.RequiresCertificateTransparency = on(a.boolKey(where+"."+written, val))
		case keyMinTLS:
			s, ok := val.(string)
			if !ok {
				a.warnf("%s.%s is %s, not a string: ignored", where, written, typeName(val))
				continue
			}
			d.MinimumTLSVersion = s
			if d.minVersion, ok = tlsVersionValues[s]; !ok {
				a.warnf("%s.%s=%q is not TLSv1.0-TLSv1.3: ATS ignores it", where, written, s)
			}
		default:
			a.warnf("%s: unknown key %s ignored", where, written)
			continue
		}
		d.written[key] = written
	}
	return d
}

// badDomainName says why ATS would never match name; "" when it is usable.
func badDomainName(name string) string {
	if _, err := netip.ParsePrefix(name); err == nil {
		return ""
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return ""
	}
	switch {
	case name == "":
		return "empty name"
	case name != strings.ToLower(name):
		return "not lowercase"
	case strings.Contains(name, "*"):
		return "wildcards are not supported (use NSIncludesSubdomains)"
	case strings.Contains(name, ":") || strings.Contains(name, "/"):
		return "not a bare domain name (no port, no scheme, no path)"
	}
	return ""
}

func (a *AppPolicy) warnf(format string, args ...any) {
	a.Warnings = append(a.Warnings, fmt.Sprintf(format, args...))
}

// boolKey reads a Boolean value; nil (with a warning) for any other type.
func (a *AppPolicy) boolKey(key string, v any) *bool {
	b, ok := v.(bool)
	if !ok {
		a.warnf("%s is %s, not a Boolean: ignored", key, typeName(v))
		return nil
	}
	return &b
}

// arbitraryOverride names the key whose presence disables
// NSAllowsArbitraryLoads; "" when none is present.
func (a *AppPolicy) arbitraryOverride() string {
	switch {
	case a.AllowsArbitraryLoadsForMedia != nil:
		return keyArbitraryForMedia
	case a.AllowsArbitraryLoadsInWebContent != nil:
		return keyArbitraryInWebContent
	case a.AllowsLocalNetworking != nil:
		return keyLocalNetworking
	}
	return ""
}

func on(b *bool) bool { return b != nil && *b }

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case map[string]any:
		return "a dictionary"
	case []any:
		return "an array"
	case bool:
		return "a Boolean"
	case uint64, int64, float64:
		return "a number"
	}
	return fmt.Sprintf("a %T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
