package ats

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"howett.net/plist"

	"github.com/inspectproxy/inspectproxy/event"
)

// atsPlist wraps NSAppTransportSecurity's inner XML into an Info.plist.
func atsPlist(inner string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict><key>NSAppTransportSecurity</key><dict>` + inner + `</dict></dict></plist>`
}

func parse(t *testing.T, inner string) *AppPolicy {
	t.Helper()
	a, err := ParsePlist(strings.NewReader(atsPlist(inner)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// domains builds an NSExceptionDomains dictionary from name → inner XML.
func domains(entries ...string) string {
	var b strings.Builder
	b.WriteString("<key>NSExceptionDomains</key><dict>")
	for i := 0; i < len(entries); i += 2 {
		b.WriteString("<key>" + entries[i] + "</key><dict>" + entries[i+1] + "</dict>")
	}
	b.WriteString("</dict>")
	return b.String()
}

const (
	yes = "<true/>"
	no  = "<false/>"
)

func kv(key, value string) string { return "<key>" + key + "</key>" + value }

func str(s string) string { return "<string>" + s + "</string>" }

func TestAppEvaluate(t *testing.T) {
	tls10 := tunnel("api.example.com:443", version(tls.VersionTLS10), cipher(0xc013))
	rsaKex := tunnel("api.example.com:443", cipher(0x009c))
	ecc224 := tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.KeyType, c.KeyBits = "ECDSA", 224 }))
	rsa1024 := tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.KeyBits = 1024 }))
	good := tunnel("api.example.com:443")
	tls13NoChain := tunnel("api.example.com:443", version(tls.VersionTLS13), cipher(0x1301), noChain)
	expired := tunnel("api.example.com:443", untrusted("expired", "x509: certificate has expired"))
	sha1 := tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.SignatureAlgorithm = "SHA1-RSA" }))
	host := func(target string, ev *event.Event) *event.Event {
		c := *ev
		c.Target = target
		return &c
	}
	arbitrary := kv("NSAllowsArbitraryLoads", yes)
	min10 := kv("NSExceptionMinimumTLSVersion", str("TLSv1.0"))
	tls10Entry := func(name string, extra ...string) string { return domains(name, min10+strings.Join(extra, "")) }

	for _, tc := range []struct {
		name    string
		plist   string
		ev      *event.Event
		allowed bool
		domain  string
		key     string
		reason  string // substring
	}{
		{"default blocks TLS 1.0", "", tls10, false, "", "", "blocked: ats.min_tls_version"},
		{"default allows good", "", good, true, "", "", "meets default ATS"},
		{"default, facts unseen", "", tls13NoChain, false, "", "", "not established, facts not seen: ats.cert_key_size"},
		// NSAllowsArbitraryLoads and what disables it.
		{"arbitrary loads", arbitrary, tls10, true, "", "NSAllowsArbitraryLoads=YES", "allowed by NSAllowsArbitraryLoads=YES"},
		{"arbitrary loads allow http", arbitrary, plainHTTP("http://www.example.com/"), true, "", "NSAllowsArbitraryLoads=YES", ""},
		{"arbitrary loads allow SHA-1 hash rule but not trust", arbitrary, sha1, false, "", "", "blocked: ats.cert_trust"},
		{"arbitrary loads keep trust", arbitrary, expired, false, "", "", "blocked: ats.cert_trust"},
		{"arbitrary loads, facts unseen, lifted", arbitrary, tunnel("api.example.com:443", version(0), cipher(0), func(t *event.TLS) { t.Alert = "x" }), true, "", "NSAllowsArbitraryLoads=YES", ""},
		{"arbitrary loads, TLS 1.3 chain unseen: trust unknown", arbitrary, tls13NoChain, false, "", "", "not established, facts not seen: ats.cert_trust"},
		{"arbitrary loads disabled by InWebContent=NO", arbitrary + kv("NSAllowsArbitraryLoadsInWebContent", no), tls10, false, "", "",
			"NSAllowsArbitraryLoads=YES is ignored because NSAllowsArbitraryLoadsInWebContent is present"},
		{"arbitrary loads disabled by ForMedia=YES", arbitrary + kv("NSAllowsArbitraryLoadsForMedia", yes), tls10, false, "", "",
			"ignored because NSAllowsArbitraryLoadsForMedia is present"},
		{"arbitrary loads disabled by LocalNetworking=NO", arbitrary + kv("NSAllowsLocalNetworking", no), tls10, false, "", "",
			"ignored because NSAllowsLocalNetworking is present"},
		{"arbitrary loads overridden by an empty entry", arbitrary + domains("api.example.com", ""), tls10, false, "api.example.com", "",
			"NSExceptionDomains[api.example.com] replaces the global keys"},
		{"arbitrary loads, entry for another host", arbitrary + domains("other.example.com", ""), tls10, true, "", "NSAllowsArbitraryLoads=YES", ""},
		// Web content and media are not applied.
		{"InWebContent only", kv("NSAllowsArbitraryLoadsInWebContent", yes), plainHTTP("http://www.example.com/"), false, "", "",
			"NSAllowsArbitraryLoadsInWebContent=YES covers only web-view or AVFoundation loads"},
		{"ForMedia only", kv("NSAllowsArbitraryLoadsForMedia", yes), tls10, false, "", "", "NSAllowsArbitraryLoadsForMedia=YES covers only"},
		// NSAllowsLocalNetworking.
		{"local: .local name", kv("NSAllowsLocalNetworking", yes), &event.Event{Kind: event.KindHTTP, HTTP: []event.HTTP{{Method: "GET", URL: "http://printer.local/status"}}}, true, "", "NSAllowsLocalNetworking=YES", ""},
		{"local: unqualified name", kv("NSAllowsLocalNetworking", yes), host("nas:443", tls10), true, "", "NSAllowsLocalNetworking=YES", ""},
		{"local: IPv4", kv("NSAllowsLocalNetworking", yes), host("192.168.1.5:443", tls10), true, "", "NSAllowsLocalNetworking=YES", ""},
		{"local: IPv6", kv("NSAllowsLocalNetworking", yes), host("[fe80::1]:443", tls10), true, "", "NSAllowsLocalNetworking=YES", ""},
		{"local: public name is not local", kv("NSAllowsLocalNetworking", yes), tls10, false, "", "", "blocked"},
		{"local: trust still applies", kv("NSAllowsLocalNetworking", yes), host("192.168.1.5:443", expired), false, "", "", "blocked: ats.cert_trust"},
		{"local: entry wins over local networking", kv("NSAllowsLocalNetworking", yes) + domains("192.168.1.5", ""), host("192.168.1.5:443", tls10), false, "192.168.1.5", "", "replaces the global keys"},
		// NSExceptionMinimumTLSVersion.
		{"TLSv1.0 entry allows TLS 1.0", tls10Entry("api.example.com"), tls10, true, "api.example.com",
			"NSExceptionDomains[api.example.com].NSExceptionMinimumTLSVersion=TLSv1.0", "allowed by NSExceptionDomains[api.example.com].NSExceptionMinimumTLSVersion=TLSv1.0"},
		{"TLSv1.1 entry blocks TLS 1.0", domains("api.example.com", kv("NSExceptionMinimumTLSVersion", str("TLSv1.1"))), tls10, false, "api.example.com", "", "blocked: ats.min_tls_version"},
		{"TLSv1.3 entry blocks TLS 1.2", domains("api.example.com", kv("NSExceptionMinimumTLSVersion", str("TLSv1.3"))), good, false, "api.example.com", "", "blocked: ats.min_tls_version"},
		{"unparseable version is ignored", domains("api.example.com", kv("NSExceptionMinimumTLSVersion", str("1.0"))), tls10, false, "api.example.com", "", "blocked: ats.min_tls_version"},
		{"entry without relaxation", domains("api.example.com", ""), good, true, "api.example.com", "", "meets NSExceptionDomains[api.example.com]"},
		// NSExceptionRequiresForwardSecrecy.
		{"PFS NO allows TLS_RSA", domains("api.example.com", kv("NSExceptionRequiresForwardSecrecy", no)), rsaKex, true, "api.example.com",
			"NSExceptionDomains[api.example.com].NSExceptionRequiresForwardSecrecy=NO", ""},
		{"PFS YES blocks TLS_RSA", domains("api.example.com", kv("NSExceptionRequiresForwardSecrecy", yes)), rsaKex, false, "api.example.com", "", "blocked: ats.forward_secrecy"},
		{"PFS NO drops the key-size rule", domains("api.example.com", kv("NSExceptionRequiresForwardSecrecy", no)), ecc224, true, "api.example.com",
			"NSExceptionDomains[api.example.com].NSExceptionRequiresForwardSecrecy=NO", ""},
		{"PFS NO cannot lift iOS 13 RSA trust", domains("api.example.com", kv("NSExceptionRequiresForwardSecrecy", no)), rsa1024, false, "api.example.com", "", "blocked: ats.cert_trust"},
		{"PFS NO and TLSv1.0 together", tls10Entry("api.example.com", kv("NSExceptionRequiresForwardSecrecy", no)),
			tunnel("api.example.com:443", version(tls.VersionTLS10), cipher(0x002f)), true, "api.example.com",
			"NSExceptionDomains[api.example.com].NSExceptionMinimumTLSVersion=TLSv1.0, NSExceptionDomains[api.example.com].NSExceptionRequiresForwardSecrecy=NO", ""},
		{"PFS NO does not allow 3DES", domains("api.example.com", kv("NSExceptionRequiresForwardSecrecy", no)), tunnel("api.example.com:443", cipher(0x000a)), false, "api.example.com", "", "blocked: ats.cipher"},
		// NSExceptionAllowsInsecureHTTPLoads.
		{"insecure HTTP entry", domains("www.example.com", kv("NSExceptionAllowsInsecureHTTPLoads", yes)), plainHTTP("http://www.example.com/"), true, "www.example.com",
			"NSExceptionDomains[www.example.com].NSExceptionAllowsInsecureHTTPLoads=YES", ""},
		{"insecure HTTP entry does not lift trust", domains("api.example.com", kv("NSExceptionAllowsInsecureHTTPLoads", yes)), expired, false, "api.example.com", "",
			"lets the app's own trust handler accept this chain"},
		{"non-TLS tunnel to another port lifted", domains("chat.example.com", kv("NSExceptionAllowsInsecureHTTPLoads", yes)), &event.Event{Kind: event.KindTunnel, Target: "chat.example.com:5222", TCP: connected()}, true, "chat.example.com",
			"NSExceptionDomains[chat.example.com].NSExceptionAllowsInsecureHTTPLoads=YES", ""},
		// NSIncludesSubdomains and name matching.
		{"subdomain without NSIncludesSubdomains", tls10Entry("example.com"), tls10, false, "", "", "blocked"},
		{"subdomain with NSIncludesSubdomains", tls10Entry("example.com", kv("NSIncludesSubdomains", yes)), tls10, true, "example.com",
			"NSExceptionDomains[example.com].NSExceptionMinimumTLSVersion=TLSv1.0", ""},
		{"NSIncludesSubdomains at depth 3", tls10Entry("example.com", kv("NSIncludesSubdomains", yes)), host("a.b.api.example.com:443", tls10), true, "example.com", "", ""},
		{"NSIncludesSubdomains=NO", tls10Entry("example.com", kv("NSIncludesSubdomains", no)), tls10, false, "", "", "blocked"},
		{"suffix that is not a parent", tls10Entry("example.com", kv("NSIncludesSubdomains", yes)), host("notexample.com:443", tls10), false, "", "", "blocked"},
		{"exact entry beats parent", domains("example.com", kv("NSIncludesSubdomains", yes)+min10, "api.example.com", ""), tls10, false, "api.example.com", "", "blocked"},
		{"parent with NSIncludesSubdomains beats nearer one without", domains("example.com", kv("NSIncludesSubdomains", yes)+min10, "b.example.com", ""),
			host("a.b.example.com:443", tls10), true, "example.com", "", ""},
		{"nearest parent with NSIncludesSubdomains wins", domains("example.com", kv("NSIncludesSubdomains", yes)+min10, "b.example.com", kv("NSIncludesSubdomains", yes)),
			host("a.b.example.com:443", tls10), false, "b.example.com", "", "blocked"},
		{"uppercase entry never matches", tls10Entry("API.example.com"), tls10, false, "", "", "blocked"},
		{"port in entry never matches", tls10Entry("api.example.com:443"), tls10, false, "", "", "blocked"},
		{"wildcard entry never matches", tls10Entry("*.example.com"), tls10, false, "", "", "blocked"},
		{"host matched case-insensitively", tls10Entry("api.example.com"), host("API.Example.COM:443", tls10), true, "api.example.com", "", ""},
		{"trailing dot entry matches only a trailing dot host", tls10Entry("api.example.com."), tls10, false, "", "", "blocked"},
		{"trailing dot host", tls10Entry("api.example.com."), host("api.example.com.:443", tls10), true, "api.example.com.", "", ""},
		// IP address and CIDR entries (iOS 17+).
		{"IP entry", tls10Entry("203.0.113.7"), host("203.0.113.7:443", tls10), true, "203.0.113.7", "NSExceptionDomains[203.0.113.7].NSExceptionMinimumTLSVersion=TLSv1.0", ""},
		{"CIDR entry", tls10Entry("203.0.113.0/24"), host("203.0.113.7:443", tls10), true, "203.0.113.0/24", "", ""},
		{"longest prefix wins", domains("203.0.113.0/24", min10, "203.0.113.0/28", ""), host("203.0.113.7:443", tls10), false, "203.0.113.0/28", "", "blocked"},
		{"longest prefix wins, other order", domains("203.0.113.0/28", min10, "203.0.113.0/24", ""), host("203.0.113.7:443", tls10), true, "203.0.113.0/28", "", ""},
		{"IPv6 CIDR", tls10Entry("2001:db8:12::/48"), host("[2001:db8:12::34]:443", tls10), true, "2001:db8:12::/48", "", ""},
		{"IP outside CIDR", tls10Entry("203.0.113.0/24"), host("198.51.100.1:443", tls10), false, "", "", "blocked"},
		// Legacy keys.
		{"NSTemporaryExceptionMinimumTLSVersion", domains("api.example.com", kv("NSTemporaryExceptionMinimumTLSVersion", str("TLSv1.0"))), tls10, true, "api.example.com",
			"NSExceptionDomains[api.example.com].NSTemporaryExceptionMinimumTLSVersion=TLSv1.0", ""},
		{"NSThirdPartyExceptionAllowsInsecureHTTPLoads", domains("www.example.com", kv("NSThirdPartyExceptionAllowsInsecureHTTPLoads", yes)), plainHTTP("http://www.example.com/"), true, "www.example.com",
			"NSExceptionDomains[www.example.com].NSThirdPartyExceptionAllowsInsecureHTTPLoads=YES", ""},
		{"NSTemporaryExceptionRequiresForwardSecrecy", domains("api.example.com", kv("NSTemporaryExceptionRequiresForwardSecrecy", no)), rsaKex, true, "api.example.com",
			"NSExceptionDomains[api.example.com].NSTemporaryExceptionRequiresForwardSecrecy=NO", ""},
		{"modern key wins over legacy", domains("api.example.com", kv("NSExceptionMinimumTLSVersion", str("TLSv1.2"))+kv("NSThirdPartyExceptionMinimumTLSVersion", str("TLSv1.0"))), tls10, false, "api.example.com", "", "blocked"},
		// NSRequiresCertificateTransparency.
		{"CT required, no SCTs", domains("api.example.com", kv("NSRequiresCertificateTransparency", yes)), tunnel("api.example.com:443", func(t *event.TLS) { zero := 0; t.SCTs = &zero }), false, "api.example.com", "", "blocked: ats.cert_trust"},
		{"CT required, TLS 1.3 chain unseen", domains("api.example.com", kv("NSRequiresCertificateTransparency", yes)), tls13NoChain, false, "api.example.com", "", "not established"},
		{"CT required, embedded SCTs", domains("api.example.com", kv("NSRequiresCertificateTransparency", yes)), tunnel("api.example.com:443", leaf(func(c *event.Cert) { c.SCTs = 2 })), true, "api.example.com", "", ""},
		// Not a Boolean.
		{"string YES is not a Boolean", kv("NSAllowsArbitraryLoads", str("YES")), tls10, false, "", "", "blocked"},
		// One plain-HTTP connection, two hosts.
		{"two hosts, one allowed", domains("a.example", kv("NSExceptionAllowsInsecureHTTPLoads", yes)), plainHTTP("http://a.example/", "http://b.example/"), false, "a.example",
			"NSExceptionDomains[a.example].NSExceptionAllowsInsecureHTTPLoads=YES", "b.example: blocked: ats.cleartext_http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := parse(t, tc.plist)
			v := a.Evaluate(tc.ev)
			if v.Allowed != tc.allowed || v.Domain != tc.domain || (tc.key != "" && v.Key != tc.key) || !strings.Contains(v.Reason, tc.reason) {
				t.Fatalf("got %+v\nwant allowed=%v domain=%q key=%q reason~%q\nwarnings %q", v, tc.allowed, tc.domain, tc.key, tc.reason, a.Warnings)
			}
			if tc.allowed && len(v.Violations) > 0 {
				t.Errorf("allowed with violations %+v", v.Violations)
			}
			if !tc.allowed && strings.HasPrefix(v.Reason, "blocked") && len(v.Violations) == 0 {
				t.Errorf("blocked without violations")
			}
			if strings.Contains(v.Reason, "not established") && len(v.Unknown) == 0 {
				t.Errorf("not established, but no unknown facts listed: %+v", v)
			}
		})
	}
}

func TestParsePlistWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, plist string
		want        []string
	}{
		{"clean", domains("api.example.com", kv("NSExceptionMinimumTLSVersion", str("TLSv1.0"))), nil},
		{"no ATS dictionary", "", nil},
		{"arbitrary loads ignored", kv("NSAllowsArbitraryLoads", yes) + kv("NSAllowsArbitraryLoadsInWebContent", yes),
			[]string{"NSAllowsArbitraryLoads=YES is ignored because NSAllowsArbitraryLoadsInWebContent is present (iOS 10+)"}},
		{"not a Boolean", kv("NSAllowsArbitraryLoads", str("YES")), []string{"NSAllowsArbitraryLoads is a string, not a Boolean: ignored"}},
		{"unknown keys", kv("NSAllowsEverything", yes) + domains("a.example", kv("NSExceptionAllowsEverything", yes)),
			[]string{"NSAppTransportSecurity: unknown key NSAllowsEverything ignored", "NSExceptionDomains[a.example]: unknown key NSExceptionAllowsEverything ignored"}},
		{"bad names", domains("API.example.com", "", "*.example.com", "", "example.com:443", ""), []string{
			"NSExceptionDomains[*.example.com]: wildcards are not supported (use NSIncludesSubdomains): entry never matches",
			"NSExceptionDomains[API.example.com]: not lowercase: entry never matches",
			"NSExceptionDomains[example.com:443]: not a bare domain name (no port, no scheme, no path): entry never matches",
		}},
		{"bad version", domains("a.example", kv("NSExceptionMinimumTLSVersion", str("TLS1.2"))), []string{`NSExceptionDomains[a.example].NSExceptionMinimumTLSVersion="TLS1.2" is not TLSv1.0-TLSv1.3: ATS ignores it`}},
		{"legacy alias", domains("a.example", kv("NSThirdPartyExceptionRequiresForwardSecrecy", no)), []string{
			"NSExceptionDomains[a.example]: legacy key NSThirdPartyExceptionRequiresForwardSecrecy read as NSExceptionRequiresForwardSecrecy"}},
		{"legacy and modern", domains("a.example", kv("NSExceptionAllowsInsecureHTTPLoads", no)+kv("NSTemporaryExceptionAllowsInsecureHTTPLoads", yes)), []string{
			"NSExceptionDomains[a.example]: legacy NSTemporaryExceptionAllowsInsecureHTTPLoads ignored, NSExceptionAllowsInsecureHTTPLoads is also present"}},
		{"subdomains of an IP", domains("10.0.0.1", kv("NSIncludesSubdomains", yes)), []string{"NSExceptionDomains[10.0.0.1]: NSIncludesSubdomains has no effect on an IP address entry"}},
		{"pinning", "<key>NSPinnedDomains</key><dict/>", []string{"NSPinnedDomains is not checked: a proxy cannot tell which certificate the app pins"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := atsPlist(tc.plist)
			if tc.name == "no ATS dictionary" {
				src = `<plist version="1.0"><dict><key>CFBundleName</key><string>x</string></dict></plist>`
				tc.want = []string{"no NSAppTransportSecurity: default ATS applies to every host"}
			}
			a, err := ParsePlist(strings.NewReader(src))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a.Warnings, tc.want) {
				t.Errorf("warnings:\n got %q\nwant %q", a.Warnings, tc.want)
			}
		})
	}
}

func TestParsePlistErrors(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"not a plist", "hello"},
		{"ATS is a string", `<plist version="1.0"><dict><key>NSAppTransportSecurity</key><string>on</string></dict></plist>`},
		{"root is an array", `<plist version="1.0"><array><string>x</string></array></plist>`},
		{"truncated binary", "bplist00\x08"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParsePlist(strings.NewReader(tc.src)); !errors.Is(err, ErrInvalidPlist) {
				t.Fatalf("err = %v, want ErrInvalidPlist", err)
			}
		})
	}
	if _, err := LoadPlist("testdata/missing.plist"); !errors.Is(err, ErrInvalidPlist) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}

// TestParsePlistBinary checks the binary form of testdata/Info.plist reads
// the same as the XML form.
func TestParsePlistBinary(t *testing.T) {
	xmlForm, err := os.ReadFile("testdata/Info.plist")
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if _, err := plist.Unmarshal(xmlForm, &root); err != nil {
		t.Fatal(err)
	}
	bin, err := plist.Marshal(root, plist.BinaryFormat)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(bin, []byte("bplist00")) {
		t.Fatalf("not a binary plist: %q", bin[:8])
	}
	fromXML, err := ParsePlist(bytes.NewReader(xmlForm))
	if err != nil {
		t.Fatal(err)
	}
	fromBin, err := ParsePlist(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromXML, fromBin) {
		t.Errorf("binary and XML differ:\n%+v\n%+v", fromBin, fromXML)
	}
	if len(fromXML.Domains) != 4 || !on(fromXML.AllowsArbitraryLoads) || !on(fromXML.AllowsLocalNetworking) {
		t.Errorf("unexpected policy %+v", fromXML)
	}
}
