// Package onboard is the phone setup page the proxy serves itself, like
// mitmproxy's mitm.it: at http://inspectproxy.setup/ through the proxy, and
// at the proxy's own address for a plain GET. It shows the addresses to
// type into a phone (with a QR code of the page), step-by-step settings
// for iOS and Android, a PAC file, and, when MITM is on, the CA as PEM, as
// DER and as an iOS configuration profile.
//
// The proxy decides who gets here (its access rules); this package only
// answers.
package onboard

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"embed"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/inspectproxy/inspectproxy/ca"
	"github.com/skip2/go-qrcode"
	"howett.net/plist"
)

// Host is the name that, asked for through the proxy, gets the setup page.
const Host = "inspectproxy.setup"

// Paths the handler answers.
const (
	PathPage    = "/"
	PathPAC     = "/proxy.pac"
	PathPEM     = "/inspectproxy-ca.pem"
	PathDER     = "/inspectproxy-ca.cer"
	PathProfile = "/inspectproxy.mobileconfig"
)

// Content types the handler serves.
const (
	TypePAC     = "application/x-ns-proxy-autoconfig"
	TypeProfile = "application/x-apple-aspen-config"
	TypeDER     = "application/x-x509-ca-cert"
)

// IsSetup reports whether a request that reached the proxy's listener is
// for the setup page rather than to be proxied: one for Host (absolute
// form through the proxy, or its Host header), or a request sent straight
// to the proxy (origin form, which no proxy client sends). CONNECT is
// never a setup request.
func IsSetup(r *http.Request) bool {
	if r.Method == http.MethodConnect {
		return false
	}
	if !r.URL.IsAbs() {
		return true
	}
	h := r.URL.Hostname()
	return strings.EqualFold(strings.TrimSuffix(h, "."), Host)
}

// Options are what the page shows.
type Options struct {
	// Proxies are the host:port a phone types in (the LAN addresses,
	// see LANAddrs). Empty: the page says the proxy listens on loopback.
	Proxies []string
	// CA is the MITM root, nil when MITM is off.
	CA *x509.Certificate
	// PACDirect are host globs (path.Match syntax) the PAC file sends
	// DIRECT, e.g. "*.apple.com".
	PACDirect []string
	// Version names the build.
	Version string
}

// Handler serves the setup page, the PAC file and the CA downloads.
type Handler struct {
	o       Options
	page    []byte // rendered once: it depends on the options only
	profile []byte // nil without a CA
	pem     []byte
}

//go:embed page.html
var pageFS embed.FS

// New builds a Handler; it renders the page and the profile once.
func New(o Options) (*Handler, error) {
	for _, g := range o.PACDirect {
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("onboard: pac direct glob %q: %w", g, err)
		}
	}
	h := &Handler{o: o}
	var err error
	if h.page, err = renderPage(o); err != nil {
		return nil, err
	}
	if o.CA != nil {
		if h.profile, err = Profile(o.CA); err != nil {
			return nil, err
		}
		h.pem = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: o.CA.Raw})
	}
	return h, nil
}

// ServeHTTP answers GET and HEAD for the page, the PAC file and the CA;
// anything else is 404 or 405.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "inspectproxy setup: only GET", http.StatusMethodNotAllowed)
		return
	}
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	switch r.URL.Path {
	case PathPage, "/index.html":
		h.servePage(w)
	case PathPAC:
		hd.Set("Content-Type", TypePAC)
		_, _ = w.Write(PAC(h.pacProxies(r), h.o.PACDirect))
	case PathPEM, PathDER, PathProfile:
		if h.o.CA == nil {
			http.Error(w, "inspectproxy setup: MITM is off, so there is no CA to install (passthrough needs none)", http.StatusNotFound)
			return
		}
		body, typ, name := h.pem, "application/x-pem-file", "inspectproxy-ca.pem"
		switch r.URL.Path {
		case PathDER:
			body, typ, name = h.o.CA.Raw, TypeDER, "inspectproxy-ca.cer"
		case PathProfile:
			body, typ, name = h.profile, TypeProfile, "inspectproxy.mobileconfig"
		}
		hd.Set("Content-Type", typ)
		hd.Set("Content-Disposition", `attachment; filename="`+name+`"`)
		hd.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	default:
		http.NotFound(w, r)
	}
}

// pacProxies are the proxies the PAC file names: the address the phone
// fetched it from when that is one of ours (it reached us there), else
// every LAN address.
func (h *Handler) pacProxies(r *http.Request) []string {
	if !r.URL.IsAbs() {
		if ap, err := netip.ParseAddrPort(r.Host); err == nil {
			return []string{ap.String()}
		}
	}
	return h.o.Proxies
}

// page is what the template shows.
type page struct {
	Options
	Proxies             []proxyAddr
	Fingerprint, CAName string
	PACURL, SetupHost   string
}

type proxyAddr struct {
	Host, Port string
	QR         template.HTML // inline SVG of the page's URL at this address
	URL        string
}

// renderPage renders the setup page for o.
func renderPage(o Options) ([]byte, error) {
	tmpl, err := template.ParseFS(pageFS, "page.html")
	if err != nil {
		return nil, fmt.Errorf("onboard: page: %w", err)
	}
	p := page{Options: o, PACURL: "http://" + Host + PathPAC, SetupHost: Host}
	for _, a := range o.Proxies {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		u := "http://" + a + "/"
		qr, err := QRSVG(u)
		if err != nil {
			return nil, fmt.Errorf("onboard: page: QR code of %s: %w", u, err)
		}
		p.Proxies = append(p.Proxies, proxyAddr{Host: host, Port: port, QR: template.HTML(qr), URL: u})
	}
	if len(p.Proxies) > 0 {
		p.PACURL = p.Proxies[0].URL + strings.TrimPrefix(PathPAC, "/")
	}
	if c := o.CA; c != nil {
		p.Fingerprint = ca.Fingerprint(c)
		p.CAName = c.Subject.CommonName
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("onboard: page: %w", err)
	}
	return b.Bytes(), nil
}

func (h *Handler) servePage(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'")
	_, _ = w.Write(h.page)
}

// PAC is a proxy auto-config file sending every URL through proxies (in
// order), except hosts matching a direct glob. There is no DIRECT
// fallback: when the proxy is down, traffic stops rather than going on
// uninspected.
func PAC(proxies, direct []string) []byte {
	var b bytes.Buffer
	b.WriteString("// inspectproxy: send everything through the proxy.\nfunction FindProxyForURL(url, host) {\n")
	for _, g := range direct {
		fmt.Fprintf(&b, "  if (shExpMatch(host, %s)) return \"DIRECT\";\n", strconv.Quote(g))
	}
	var ps []string
	for _, p := range proxies {
		ps = append(ps, "PROXY "+p)
	}
	if len(ps) == 0 {
		ps = []string{"DIRECT"}
	}
	fmt.Fprintf(&b, "  return %s;\n}\n", strconv.Quote(strings.Join(ps, "; ")))
	return b.Bytes()
}

// QRSVG renders text as a QR code (medium error correction) in SVG: one
// path of unit squares with the four-module quiet zone the standard asks.
func QRSVG(text string) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("onboard: qr code: %w", err)
	}
	q.DisableBorder = true
	bm := q.Bitmap()
	const quiet = 4
	n := len(bm) + 2*quiet
	var d strings.Builder
	for y, line := range bm {
		for x, on := range line {
			if on {
				fmt.Fprintf(&d, "M%d %dh1v1h-1z", x+quiet, y+quiet)
			}
		}
	}
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges" role="img" aria-label="QR code of %s"><rect width="%d" height="%d" fill="#fff"/><path d="%s" fill="#000"/></svg>`,
		n, n, template.HTMLEscapeString(text), n, n, d.String()), nil
}

// Profile is an iOS configuration profile installing ca as a trusted root
// (payload com.apple.security.root). Its identifiers derive from the
// certificate, so downloading it again replaces the profile rather than
// adding a second one.
func Profile(ca *x509.Certificate) ([]byte, error) {
	sum := sha256.Sum256(ca.Raw)
	fp := hex.EncodeToString(sum[:8])
	ns := uuid.NewSHA1(uuid.NameSpaceOID, []byte("inspectproxy"))
	name := ca.Subject.CommonName
	if name == "" {
		name = "inspectproxy CA"
	}
	type payload struct {
		CertificateFileName string `plist:"PayloadCertificateFileName,omitempty"`
		Content             any    `plist:"PayloadContent"`
		Description         string `plist:"PayloadDescription"`
		DisplayName         string `plist:"PayloadDisplayName"`
		Identifier          string `plist:"PayloadIdentifier"`
		Organization        string `plist:"PayloadOrganization,omitempty"`
		RemovalDisallowed   *bool  `plist:"PayloadRemovalDisallowed,omitempty"`
		Type                string `plist:"PayloadType"`
		UUID                string `plist:"PayloadUUID"`
		Version             int    `plist:"PayloadVersion"`
	}
	no := false
	root := payload{
		CertificateFileName: "inspectproxy-ca.cer",
		Content:             ca.Raw,
		Description:         "Adds the inspectproxy CA as a trusted root, so that the proxy can decrypt HTTPS (MITM).",
		DisplayName:         name,
		Identifier:          "dev.inspectproxy.ca." + fp,
		Type:                "com.apple.security.root",
		UUID:                strings.ToUpper(uuid.NewSHA1(ns, []byte("root "+fp)).String()),
		Version:             1,
	}
	prof := payload{
		Content:           []payload{root},
		Description:       "Installs the root certificate of the inspectproxy on this network. After installing, turn on full trust: Settings > General > About > Certificate Trust Settings.",
		DisplayName:       "inspectproxy CA (" + name + ")",
		Identifier:        "dev.inspectproxy.profile." + fp,
		Organization:      "inspectproxy",
		RemovalDisallowed: &no,
		Type:              "Configuration",
		UUID:              strings.ToUpper(uuid.NewSHA1(ns, []byte("profile "+fp)).String()),
		Version:           1,
	}
	b, err := plist.MarshalIndent(prof, plist.XMLFormat, "\t")
	if err != nil {
		return nil, fmt.Errorf("onboard: profile: %w", err)
	}
	return b, nil
}

// LANAddrs are the host:port a phone types in to reach a proxy listening
// on listen: that address itself, or for an unspecified one (0.0.0.0, ::)
// every non-loopback unicast address of the machine, IPv4 first. A
// loopback listener gives none: a phone cannot reach it.
func LANAddrs(listen string) ([]string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("onboard: listen %q: %w", listen, err)
	}
	a, err := netip.ParseAddr(host)
	if err != nil { // a name: show it as it is
		if host == "localhost" {
			return nil, nil
		}
		return []string{listen}, nil
	}
	switch {
	case a.IsLoopback():
		return nil, nil
	case !a.IsUnspecified():
		return []string{netip.AddrPortFrom(a, mustPort(port)).String()}, nil
	}
	ifs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("onboard: interface addresses: %w", err)
	}
	var v4, v6 []string
	for _, ia := range ifs {
		n, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || (a.Is4() && !ip.Is4()) {
			continue
		}
		s := netip.AddrPortFrom(ip, mustPort(port)).String()
		if ip.Is4() {
			v4 = append(v4, s)
		} else {
			v6 = append(v6, s)
		}
	}
	return append(v4, v6...), nil
}

func mustPort(p string) uint16 {
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}
