package ats

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/outcome"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// Rule ids: a stable contract, written in event.Violation.Rule.
const (
	RuleCleartextHTTP     = "ats.cleartext_http"
	RuleMinTLSVersion     = "ats.min_tls_version"
	RuleForwardSecrecy    = "ats.forward_secrecy"
	RuleCipher            = "ats.cipher"
	RuleCertKeySize       = "ats.cert_key_size"
	RuleCertSignatureHash = "ats.cert_signature_hash"
	RuleCertTrust         = "ats.cert_trust"
)

// RuleIDs returns every rule id in the order violations are listed.
func RuleIDs() []string {
	return []string{
		RuleCleartextHTTP, RuleMinTLSVersion, RuleForwardSecrecy, RuleCipher,
		RuleCertKeySize, RuleCertSignatureHash, RuleCertTrust,
	}
}

// Values of event.ATS.Compliant.
const (
	Yes     = "yes"
	No      = "no"
	Unknown = "unknown"
)

// Policy is one ATS configuration, the way an Info.plist dictionary
// resolves for one host.
type Policy struct {
	// Name goes into event.ATS.Policy.
	Name string
	// MinTLSVersion is a crypto/tls version constant; 0 means TLS 1.2.
	MinTLSVersion uint16
	// RequireForwardSecrecy false is NSExceptionRequiresForwardSecrecy=NO:
	// it allows the TLS_RSA_WITH_AES_* suites and drops the leaf key-size check.
	RequireForwardSecrecy bool
	// AllowInsecureHTTP is NSExceptionAllowsInsecureHTTPLoads=YES.
	AllowInsecureHTTP bool
	// Disabled turns ATS off for the host (NSAllowsArbitraryLoads,
	// NSAllowsLocalNetworking): only certificate trust is still checked,
	// because the platform checks it for every TLS connection.
	Disabled bool
	// RequireCT is NSRequiresCertificateTransparency=YES.
	RequireCT bool
}

// DefaultPolicy is ATS with no exceptions.
func DefaultPolicy() Policy {
	return Policy{Name: "ats-default", MinTLSVersion: tls.VersionTLS12, RequireForwardSecrecy: true}
}

func (p Policy) minVersion() uint16 {
	if p.MinTLSVersion == 0 {
		return tls.VersionTLS12
	}
	return p.MinTLSVersion
}

// Evaluate checks the facts of one connection against p. A rule whose
// facts were not seen is listed in Unknown, never passed silently.
func Evaluate(ev *event.Event, p Policy) *event.ATS { return evaluate(loadsOf(ev), p) }

func evaluate(loads []load, p Policy) *event.ATS {
	r := &event.ATS{Policy: p.Name}
	for _, l := range loads {
		res := check(l, p)
		r.Violations = append(r.Violations, res.violations...)
		r.Unknown = append(r.Unknown, res.unknown...)
	}
	r.Compliant = compliance(r.Violations, r.Unknown)
	return r
}

func compliance(violations, unknown []event.Violation) string {
	switch {
	case len(violations) > 0:
		return No
	case len(unknown) > 0:
		return Unknown
	}
	return Yes
}

// load is what ATS judges: one host reached by one client connection.
// A plain-HTTP proxy connection can carry requests to several hosts, each
// its own load; a tunnel is one load.
type load struct {
	host string // lowercase, no port
	port string
	// urls are the plain-HTTP requests (Kind http).
	urls []string
	kind string
	tls  *event.TLS
	// tlsAbsent is event.TLSAbsent, for tunnels without TLS.
	tlsAbsent string
}

// loadsOf lists the loads of ev that reached a server; none for a
// connection that never did (see Absent).
func loadsOf(ev *event.Event) []load {
	if !outcome.Of(ev).Reached {
		return nil
	}
	return reachedLoads(ev)
}

// reachedLoads is loadsOf for an event known to have reached a server.
func reachedLoads(ev *event.Event) []load {
	host, port := splitTarget(ev.Target)
	if ev.Kind != event.KindHTTP {
		return []load{{host: host, port: port, kind: ev.Kind, tls: ev.TLS, tlsAbsent: ev.TLSAbsent}}
	}
	var loads []load
	index := map[string]int{}
	for i := range ev.HTTP {
		h := &ev.HTTP[i]
		if !outcome.RequestReached(ev, h) {
			continue
		}
		u, err := url.Parse(h.URL)
		if err != nil || u.Host == "" {
			continue
		}
		k := normalizeHost(u.Hostname())
		i, ok := index[k]
		if !ok {
			i = len(loads)
			index[k] = i
			loads = append(loads, load{host: k, port: u.Port(), kind: ev.Kind})
		}
		loads[i].urls = append(loads[i].urls, h.Method+" "+h.URL)
	}
	if len(loads) == 0 && len(ev.HTTP) == 0 {
		// An upstream connection was made though no request is recorded.
		loads = []load{{host: host, port: port, kind: ev.Kind}}
	}
	return loads
}

func splitTarget(target string) (host, port string) {
	h, p, err := net.SplitHostPort(target)
	if err != nil {
		return normalizeHost(target), ""
	}
	return normalizeHost(h), p
}

// normalizeHost lowercases h; a trailing dot stays, since ATS matches
// "example.com." only against an entry written with the dot.
func normalizeHost(h string) string {
	return strings.ToLower(strings.Trim(h, "[]"))
}

type result struct {
	violations, unknown []event.Violation
}

func (r *result) fail(rule, detail string) {
	r.violations = append(r.violations, event.Violation{Rule: rule, Detail: detail})
}

func (r *result) has(rule string) bool {
	return slices.ContainsFunc(r.violations, func(v event.Violation) bool { return v.Rule == rule })
}

func (r *result) unseen(rule, detail string) {
	r.unknown = append(r.unknown, event.Violation{Rule: rule, Detail: detail})
}

// check applies every rule of p to l, in RuleIDs order.
func check(l load, p Policy) result {
	var r result
	insecureOK := p.AllowInsecureHTTP || p.Disabled
	switch {
	case l.kind == event.KindHTTP:
		if !insecureOK {
			r.fail(RuleCleartextHTTP, cleartextDetail(l))
		}
		return r
	case l.tls == nil:
		switch {
		case insecureOK:
		case l.port == "80":
			r.fail(RuleCleartextHTTP, fmt.Sprintf("tunnel to %s without TLS%s", net.JoinHostPort(l.host, l.port), absentSuffix(l.tlsAbsent)))
		default:
			r.unseen(RuleCleartextHTTP, fmt.Sprintf("no TLS seen on the tunnel to %s%s", net.JoinHostPort(l.host, l.port), absentSuffix(l.tlsAbsent)))
		}
		return r
	}
	t := l.tls
	if !p.Disabled {
		checkVersion(&r, t, p)
		checkCipher(&r, t, p)
		checkKeySize(&r, t, p)
		checkSignatureHash(&r, t)
	}
	checkTrust(&r, t, p)
	return r
}

func cleartextDetail(l load) string {
	switch len(l.urls) {
	case 0:
		return "plain-HTTP proxy connection to " + net.JoinHostPort(l.host, l.port)
	case 1:
		return "plain HTTP: " + l.urls[0]
	}
	return fmt.Sprintf("plain HTTP: %s (and %d more requests)", l.urls[0], len(l.urls)-1)
}

func absentSuffix(why string) string {
	if why == "" {
		return ""
	}
	return " (" + why + ")"
}

// handshakeCut says why a fact of the handshake is missing.
func handshakeCut(t *event.TLS) string {
	switch {
	case t.Alert != "":
		return "handshake ended with alert " + t.Alert
	case t.ParseError != "":
		return "inspection stopped: " + t.ParseError
	}
	return "handshake not seen to the ServerHello"
}

func checkVersion(r *result, t *event.TLS, p Policy) {
	switch {
	case t.Version == "":
		r.unseen(RuleMinTLSVersion, "version not negotiated: "+handshakeCut(t))
	case t.VersionCode == 0:
		r.unseen(RuleMinTLSVersion, "no version_code for "+t.Version+" (an event from an older inspectproxy)")
	case t.VersionCode < tls.VersionSSL30 || t.VersionCode > tls.VersionTLS13:
		r.unseen(RuleMinTLSVersion, "unrecognised version "+t.Version)
	case t.VersionCode < p.minVersion():
		r.fail(RuleMinTLSVersion, fmt.Sprintf("negotiated %s, minimum is %s", t.Version, tlsinfo.VersionName(p.minVersion())))
	}
}

func checkCipher(r *result, t *event.TLS, p Policy) {
	if t.Cipher == "" {
		why := "cipher suite not negotiated: " + handshakeCut(t)
		r.unseen(RuleForwardSecrecy, why)
		r.unseen(RuleCipher, why)
		return
	}
	if t.CipherCode == 0 {
		why := "no cipher_code for " + t.Cipher + " (an event from an older inspectproxy)"
		r.unseen(RuleForwardSecrecy, why)
		r.unseen(RuleCipher, why)
		return
	}
	class, why := classifyCipher(t.CipherCode)
	switch {
	case class == cipherNone:
		r.fail(RuleCipher, t.Cipher+": "+why)
	case class == cipherRSA && p.RequireForwardSecrecy:
		r.fail(RuleForwardSecrecy, t.Cipher+": RSA key exchange has no forward secrecy")
	}
}

// chainMissing says why no certificate was seen.
func chainMissing(t *event.TLS) string {
	switch {
	case t.Resumed:
		return "session resumed: the server sent no certificate"
	case t.VersionCode == tls.VersionTLS13:
		return "chain not seen: TLS 1.3 encrypts it and no probe fetched it"
	case t.Alert != "" || t.ParseError != "":
		return "chain not seen: " + handshakeCut(t)
	}
	return "chain not seen"
}

func checkKeySize(r *result, t *event.TLS, p Policy) {
	if !p.RequireForwardSecrecy {
		return
	}
	if len(t.Chain) == 0 {
		r.unseen(RuleCertKeySize, chainMissing(t))
		return
	}
	leaf := t.Chain[0]
	switch min := minKeyBits(leaf.KeyType); {
	case min == 0:
		r.unseen(RuleCertKeySize, fmt.Sprintf("leaf %s has a %s key", leaf.Subject, leaf.KeyType))
	case leaf.KeyBits < min:
		r.fail(RuleCertKeySize, fmt.Sprintf("leaf %s has a %d-bit %s key, minimum %d", leaf.Subject, leaf.KeyBits, leaf.KeyType, min))
	}
}

// minKeyBits is ATS's leaf key minimum; 0 for key types it does not name.
func minKeyBits(keyType string) int {
	switch keyType {
	case "RSA":
		return 2048
	case "ECDSA", "Ed25519":
		return 256
	}
	return 0
}

// isRoot reports whether c is a trust anchor, which ATS does not hash-check.
func isRoot(c event.Cert) bool { return c.IsCA && c.SelfSigned }

func weakHash(sigAlg string) bool {
	s := strings.ToUpper(sigAlg)
	return strings.Contains(s, "SHA1") || strings.Contains(s, "MD5") || strings.Contains(s, "MD2")
}

func checkSignatureHash(r *result, t *event.TLS) {
	if len(t.Chain) == 0 {
		r.unseen(RuleCertSignatureHash, chainMissing(t))
		return
	}
	var weak []string
	for i, c := range t.Chain {
		if !isRoot(c) && weakHash(c.SignatureAlgorithm) {
			weak = append(weak, fmt.Sprintf("%s %s signed with %s", position(i), c.Subject, c.SignatureAlgorithm))
		}
	}
	if len(weak) > 0 {
		r.fail(RuleCertSignatureHash, strings.Join(weak, "; "))
	}
}

func position(i int) string {
	if i == 0 {
		return "leaf"
	}
	return fmt.Sprintf("chain[%d]", i)
}

// Dates from Apple's "Requirements for trusted certificates in iOS 13 and
// macOS 10.15" (support.apple.com/103769).
var (
	ekuRequiredFrom = time.Date(2019, 7, 1, 0, 0, 0, 0, time.UTC)
	maxValidity     = 825 * 24 * time.Hour
)

func checkTrust(r *result, t *event.TLS, p Policy) {
	var bad []string
	var unseen string
	// A weakness another rule already reports is not reported again here;
	// it is here when that rule was lifted, as iOS 13's trust still refuses it.
	keyReported := r.has(RuleCertKeySize)
	hashReported := r.has(RuleCertSignatureHash)
	// Go's verifier cannot check SHA-1 signatures at all, so such a chain
	// fails verification for the hash alone, which cert_signature_hash says.
	if t.Verified != nil && !*t.Verified && !(hashReported && strings.Contains(t.VerifyError, "insecure algorithm")) {
		bad = append(bad, verifyDetail(t))
	}
	if len(t.Chain) > 0 {
		bad = append(bad, platformTrust(t.Chain, keyReported, hashReported)...)
		if p.RequireCT {
			switch msg, known := ctShortfall(t); {
			case !known:
				unseen = msg
			case msg != "":
				bad = append(bad, msg)
			}
		}
	}
	switch {
	case len(bad) > 0:
		r.fail(RuleCertTrust, strings.Join(bad, "; "))
	case len(t.Chain) == 0:
		r.unseen(RuleCertTrust, chainMissing(t))
	case t.Verified == nil:
		r.unseen(RuleCertTrust, "chain not verified")
	case unseen != "":
		r.unseen(RuleCertTrust, unseen)
	}
}

func verifyDetail(t *event.TLS) string {
	kind := t.VerifyErrorKind
	if kind == "" {
		kind = "other"
	}
	if t.VerifyError == "" {
		return kind
	}
	return kind + ": " + t.VerifyError
}

// platformTrust applies the requirements Apple's trust evaluation places on
// every TLS server chain since iOS 13, with or without ATS: no exception
// key lifts them.
func platformTrust(chain []event.Cert, keyReported, hashReported bool) []string {
	var bad []string
	for i, c := range chain {
		if isRoot(c) {
			continue
		}
		if c.KeyType == "RSA" && c.KeyBits < 2048 && !(keyReported && i == 0) {
			bad = append(bad, fmt.Sprintf("%s %s: %d-bit RSA key is not trusted for TLS (iOS 13+)", position(i), c.Subject, c.KeyBits))
		}
		if weakHash(c.SignatureAlgorithm) && !hashReported {
			bad = append(bad, fmt.Sprintf("%s %s: %s signature is not trusted for TLS (iOS 13+)", position(i), c.Subject, c.SignatureAlgorithm))
		}
	}
	leaf := chain[0]
	if !leaf.NotBefore.Before(ekuRequiredFrom) {
		if !hasServerAuth(leaf.ExtKeyUsage) {
			bad = append(bad, "leaf "+leaf.Subject+": no serverAuth extended key usage (required since 2019-07-01)")
		}
		if d := leaf.NotAfter.Sub(leaf.NotBefore); d > maxValidity {
			bad = append(bad, fmt.Sprintf("leaf %s: valid %d days, over 825 (required since 2019-07-01)", leaf.Subject, int(d.Hours()/24)))
		}
	}
	return bad
}

func hasServerAuth(ekus []string) bool {
	for _, e := range ekus {
		// Spelling varies ("ServerAuth", "serverAuth", "server_auth").
		if strings.EqualFold(strings.ReplaceAll(e, "_", ""), "serverauth") {
			return true
		}
	}
	return false
}

// ctShortfall checks SCT counts against Apple's CT policy
// (support.apple.com/103214): "" when they suffice; known is false when
// the embedded SCTs fall short and those sent in the handshake were not seen.
func ctShortfall(t *event.TLS) (msg string, known bool) {
	leaf := t.Chain[0]
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	days := int(lifetime.Hours() / 24)
	embeddedNeed := 2
	if lifetime > 180*24*time.Hour {
		embeddedNeed = 3
	}
	if leaf.SCTs >= embeddedNeed {
		return "", true
	}
	if t.SCTs == nil {
		return fmt.Sprintf("certificate transparency: %d embedded SCTs for a %d-day certificate, SCTs sent in the handshake not seen", leaf.SCTs, days), false
	}
	// Two SCTs suffice once one of them arrives outside the certificate.
	if delivered := *t.SCTs; delivered >= 1 && leaf.SCTs+delivered >= 2 {
		return "", true
	}
	return fmt.Sprintf("certificate transparency: %d embedded and %d delivered SCTs are too few for a %d-day certificate (NSRequiresCertificateTransparency)", leaf.SCTs, *t.SCTs, days), true
}

// isLocal reports whether NSAllowsLocalNetworking covers host: unqualified
// names, .local names and IP addresses.
func isLocal(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return !strings.Contains(host, ".") || strings.HasSuffix(host, ".local")
}
