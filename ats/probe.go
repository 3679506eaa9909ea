package ats

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// ErrProbeURL is returned for a URL Probe cannot test.
var ErrProbeURL = errors.New("ats: probe needs an https://host[:port] URL")

// ProbeOptions configures Probe.
type ProbeOptions struct {
	// Timeout bounds the connect and handshake of each configuration;
	// 0 means 10 seconds.
	Timeout time.Duration
	// Roots verifies the server's chain; nil means the system roots.
	Roots *x509.CertPool
}

// ProbeReport is the outcome of Probe, one result per configuration in
// nscurl --ats-diagnostics order.
type ProbeReport struct {
	URL     string        `json:"url"`
	Address string        `json:"address"`
	Results []ProbeResult `json:"results"`
	// Chain is the server's chain from the first completed handshake.
	Chain []event.Cert `json:"chain,omitempty"`
	// Trust is "verified" or why verification failed.
	Trust string `json:"trust,omitempty"`
}

// ProbeResult is one ATS configuration tried against the server.
type ProbeResult struct {
	Group string `json:"group"`
	Name  string `json:"name"`
	// Dictionary is the NSAppTransportSecurity dictionary tried, printed
	// the way nscurl prints it.
	Dictionary string `json:"ats_dictionary"`
	Pass       bool   `json:"pass"`
	Version    string `json:"version,omitempty"`
	Cipher     string `json:"cipher,omitempty"`
	// Reason says why the configuration failed: a handshake error or the
	// ATS rules the connection broke.
	Reason     string            `json:"reason,omitempty"`
	Violations []event.Violation `json:"violations,omitempty"`
}

// probeConfig is one nscurl configuration: an ATS dictionary.
type probeConfig struct {
	group, name string
	dict        map[string]any
}

// probeConfigs lists nscurl --ats-diagnostics' configurations, in its order
// and with its names.
func probeConfigs(host string) []probeConfig {
	domain := func(keys map[string]any) map[string]any {
		return map[string]any{keyExceptionDomains: map[string]any{host: keys}}
	}
	pfsOff := map[string]any{keyForwardSecrecy: false}
	pfsOffHTTP := map[string]any{keyForwardSecrecy: false, keyInsecureHTTP: true}
	cfgs := []probeConfig{
		{"Default ATS Secure Connection", "ATS Default Connection", map[string]any{}},
		{"Allowing Arbitrary Loads", "Allow All Loads", map[string]any{keyArbitraryLoads: true}},
	}
	versions := func(group, suffix string, extra map[string]any) {
		for _, v := range []string{"TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1.0"} {
			keys := map[string]any{keyMinTLS: v}
			maps.Copy(keys, extra)
			cfgs = append(cfgs, probeConfig{group + host, v + suffix, domain(keys)})
		}
	}
	versions("Configuring TLS exceptions for ", "", nil)
	cfgs = append(cfgs,
		probeConfig{"Configuring PFS exceptions for " + host, "Disabling Perfect Forward Secrecy", domain(pfsOff)},
		probeConfig{"Configuring PFS exceptions and allowing insecure HTTP for " + host, "Disabling Perfect Forward Secrecy and Allowing Insecure HTTP", domain(pfsOffHTTP)},
	)
	versions("Configuring TLS exceptions with PFS disabled for ", " with PFS disabled", pfsOff)
	versions("Configuring TLS exceptions with PFS disabled and insecure HTTP allowed for ", " with PFS disabled and insecure HTTP allowed", pfsOffHTTP)
	return cfgs
}

// Probe tries each nscurl --ats-diagnostics configuration against the
// server at rawURL with a real handshake, then applies the same ATS rules
// as Evaluate to what the handshake showed. It makes no HTTP request.
func Probe(ctx context.Context, rawURL string, opts ProbeOptions) (*ProbeReport, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %q", ErrProbeURL, rawURL)
	}
	host, port := normalizeHost(u.Hostname()), u.Port()
	if port == "" {
		port = "443"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	rep := &ProbeReport{URL: rawURL, Address: net.JoinHostPort(host, port)}
	for i, c := range probeConfigs(host) {
		p := fromDict(c.dict).resolve(host).policy
		res := ProbeResult{Group: c.group, Name: c.name, Dictionary: describeDict(c.dict)}
		t, err := handshake(ctx, rep.Address, host, clientConfig(p, host), opts)
		var dialErr *net.OpError
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ats: probe %s: %w", rep.Address, ctx.Err())
		case i == 0 && errors.As(err, &dialErr) && dialErr.Op == "dial":
			return nil, fmt.Errorf("ats: probe %s: %w", rep.Address, err)
		case err != nil:
			res.Reason = fmt.Sprintf("%v (offered %s)", err, offer(p))
		default:
			res.Version, res.Cipher = t.Version, t.Cipher
			r := check(load{host: host, port: port, kind: event.KindTunnel, tls: t}, p)
			res.Violations = r.violations
			res.Pass = compliance(r.violations, r.unknown) == Yes
			var why []string
			for _, v := range slices.Concat(r.violations, r.unknown) {
				why = append(why, v.Rule+": "+v.Detail)
			}
			res.Reason = strings.Join(why, "; ")
			if rep.Chain == nil {
				rep.Chain = t.Chain
				rep.Trust = "verified"
				if !*t.Verified {
					rep.Trust = verifyDetail(t)
				}
			}
		}
		rep.Results = append(rep.Results, res)
	}
	return rep, nil
}

// clientConfig is what an Apple client offers under p. Trust is judged by
// the ATS rules after the handshake, so that a bad chain is reported with
// its reason rather than as a handshake error.
func clientConfig(p Policy, host string) *tls.Config {
	suites := fsSuites
	if p.Disabled || !p.RequireForwardSecrecy {
		suites = slices.Concat(fsSuites, rsaSuites)
	}
	minVersion := p.minVersion()
	if p.Disabled {
		minVersion = tls.VersionTLS10
	}
	return &tls.Config{
		ServerName:         host,
		MinVersion:         minVersion,
		MaxVersion:         tls.VersionTLS13,
		CipherSuites:       suiteIDs(suites),
		InsecureSkipVerify: true,
	}
}

// offer says what clientConfig(p) offers, for handshake failures.
func offer(p Policy) string {
	cfg := clientConfig(p, "")
	suites := "ATS forward-secrecy suites"
	if len(cfg.CipherSuites) > len(suiteIDs(fsSuites)) {
		suites += " and TLS_RSA_WITH_AES_*"
	}
	return fmt.Sprintf("%s to %s, %s", tlsinfo.VersionName(cfg.MinVersion), tlsinfo.VersionName(cfg.MaxVersion), suites)
}

// suiteIDs keeps the TLS 1.2-and-older suites of want that crypto/tls
// implements; TLS 1.3 suites are not configurable there, and all of them
// are in the ATS list.
func suiteIDs(want []uint16) []uint16 {
	var ids []uint16
	for _, s := range slices.Concat(tls.CipherSuites(), tls.InsecureCipherSuites()) {
		if slices.Contains(want, s.ID) && slices.ContainsFunc(s.SupportedVersions, func(v uint16) bool { return v < tls.VersionTLS13 }) {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// handshake connects to addr and returns what the handshake showed.
func handshake(ctx context.Context, addr, host string, cfg *tls.Config, opts ProbeOptions) (*event.TLS, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	st := c.ConnectionState()
	t := tlsinfo.StateEvent(st)
	t.ChainSource = event.ChainProbed
	tlsinfo.SetVerdict(t, tlsinfo.Verify(st.PeerCertificates, host, opts.Roots, time.Now()))
	return t, nil
}

// describeDict prints an ATS dictionary the way NSDictionary describes
// itself, as nscurl shows it.
func describeDict(dict map[string]any) string {
	var b strings.Builder
	describe(&b, dict, 0)
	return b.String()
}

func describe(b *strings.Builder, v any, level int) {
	switch x := v.(type) {
	case map[string]any:
		b.WriteString("{\n")
		pad := strings.Repeat("    ", level+1)
		for _, k := range sortedKeys(x) {
			b.WriteString(pad + quoteNS(k) + " = ")
			if _, nested := x[k].(map[string]any); nested {
				b.WriteString(pad)
			}
			describe(b, x[k], level+1)
			b.WriteString(";\n")
		}
		b.WriteString(strings.Repeat("    ", level) + "}")
	case bool:
		fmt.Fprint(b, x)
	case string:
		b.WriteString(quoteNS(x))
	}
}

// quoteNS quotes s unless it is a bare word, as NSString descriptions do.
func quoteNS(s string) string {
	for _, r := range s {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z') {
			return `"` + s + `"`
		}
	}
	return s
}

const rule80 = "================================================================================"

// WriteText writes the report in nscurl --ats-diagnostics --verbose's layout.
func (r *ProbeReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Starting ATS Diagnostics\n\nConfiguring ATS Info.plist keys and displaying the result of HTTPS loads to %s.\n", r.URL)
	b.WriteString("A test will \"PASS\" if the TLS handshake completes and the connection meets the ATS dictionary.\n")
	group := ""
	for _, res := range r.Results {
		if res.Group != group {
			group = res.Group
			fmt.Fprintf(&b, "%s\n\n%s\n", rule80, group)
		}
		result := "FAIL"
		if res.Pass {
			result = "PASS"
		}
		fmt.Fprintf(&b, "---\n%s\nATS Dictionary:\n%s\n", res.Name, res.Dictionary)
		if res.Version != "" {
			fmt.Fprintf(&b, "Negotiated : %s, %s\n", res.Version, res.Cipher)
		}
		fmt.Fprintf(&b, "Result : %s\n", result)
		if !res.Pass && res.Reason != "" {
			fmt.Fprintf(&b, "Reason : %s\n", res.Reason)
		}
		b.WriteString("---\n\n")
	}
	fmt.Fprintf(&b, "%s\n\nServer chain", rule80)
	if len(r.Chain) == 0 {
		b.WriteString(": none, no handshake completed\n")
	} else {
		b.WriteString(" (first completed handshake):\n")
		for i, c := range r.Chain {
			fmt.Fprintf(&b, "  [%d] %s\n      issuer %s\n      %s %d-bit key, %s, valid %s to %s",
				i, c.Subject, c.Issuer, c.KeyType, c.KeyBits, c.SignatureAlgorithm,
				c.NotBefore.UTC().Format(time.DateOnly), c.NotAfter.UTC().Format(time.DateOnly))
			if len(c.DNSNames)+len(c.IPAddresses) > 0 {
				fmt.Fprintf(&b, ", SAN %s", strings.Join(slices.Concat(c.DNSNames, c.IPAddresses), " "))
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Trust: %s\n", r.Trust)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON document.
func (r *ProbeReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
