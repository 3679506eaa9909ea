package access

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ErrAuthority is what every ParseAuthority error wraps.
var ErrAuthority = errors.New("access: bad authority")

// Authority is a destination as a client named it.
type Authority struct {
	// Host is a DNS name as written, or an IP literal in canonical form
	// (without brackets).
	Host string
	// Addr is the literal's address when Host is an IP literal.
	Addr netip.Addr
	Port uint16
}

// String is host:port, with brackets around IPv6: what the dialer takes.
func (a Authority) String() string { return net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port))) }

// maxAuthority bounds the input: a 253-byte name and ":65535".
const maxAuthority = 253 + 1 + 5

// ParseAuthority parses a CONNECT request-target (RFC 9110 authority-form,
// host:port, the port required) strictly: IPv6 literals in brackets, a
// port from 1 to 65535 in plain decimal, no userinfo, no zone ids, DNS
// names of letters, digits, '-' and '_' only, and no host whose last
// label is a number unless it is a dotted-quad IPv4 address (127.1,
// 0x7f.1 and 2130706433 mean 127.0.0.1 to some resolvers and not to
// others, so they are refused rather than guessed).
func ParseAuthority(s string) (Authority, error) {
	bad := func(why string) (Authority, error) {
		return Authority{}, fmt.Errorf("%w %q: %s", ErrAuthority, s, why)
	}
	if len(s) > maxAuthority+2 { // brackets
		return bad("too long")
	}
	if strings.ContainsRune(s, '@') {
		return bad("userinfo is not allowed")
	}
	if strings.ContainsRune(s, '%') {
		return bad("zone ids and percent-encoding are not allowed")
	}
	var host, port string
	var hasPort bool
	if rest, ok := strings.CutPrefix(s, "["); ok {
		h, after, ok := strings.Cut(rest, "]")
		if !ok {
			return bad("missing ] after IPv6 address")
		}
		host = h
		if after != "" {
			port, hasPort = strings.CutPrefix(after, ":")
			if !hasPort {
				return bad("junk after ]")
			}
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return bad("brackets must hold an IPv6 address")
		}
	} else {
		if strings.Count(s, ":") > 1 {
			return bad("an IPv6 address must be in brackets")
		}
		host, port, hasPort = strings.Cut(s, ":")
	}
	if !hasPort {
		return bad("missing port")
	}
	p, err := parsePort(port)
	if err != nil {
		return bad(err.Error())
	}
	a := Authority{Port: p}
	if host == "" {
		return bad("empty host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		a.Addr, a.Host = ip, ip.String()
		return a, nil
	}
	if err := checkName(host); err != nil {
		return bad(err.Error())
	}
	a.Host = host
	return a, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 5 || (s[0] == '0') {
		return 0, fmt.Errorf("port %q: want 1 to 65535", s)
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q: want 1 to 65535", s)
		}
	}
	n, _ := strconv.Atoi(s) // at most 5 digits
	if n > 65535 {
		return 0, fmt.Errorf("port %q: want 1 to 65535", s)
	}
	return uint16(n), nil
}

// checkName checks a DNS host name (RFC 1123 labels, '_' tolerated as
// real names use it; one trailing dot allowed).
func checkName(h string) error {
	name := strings.TrimSuffix(h, ".")
	if len(name) > 253 {
		return errors.New("name longer than 253 bytes")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("empty label or label longer than 63 bytes")
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("byte %q is not allowed in a host name", c)
			}
		}
	}
	if numeric(labels[len(labels)-1]) {
		return errors.New("numeric host that is not a dotted-quad IPv4 address (e.g. 127.1, 0x7f.1, 2130706433): resolvers disagree on what it means")
	}
	return nil
}

// numeric reports whether a label is a number in the forms inet_aton
// accepts (decimal, octal, 0x hex), as the WHATWG URL standard's "ends in
// a number" check does.
func numeric(l string) bool {
	digits := l
	if rest, ok := strings.CutPrefix(strings.ToLower(l), "0x"); ok {
		digits = rest
		for _, c := range []byte(digits) {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
		return true
	}
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
