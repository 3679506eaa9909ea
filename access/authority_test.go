package access

import (
	"errors"
	"strings"
	"testing"
)

// TestParseAuthority: the grammar is RFC 9110's authority-form (RFC 3986
// host: IP-literal in brackets, IPv4address, reg-name; port 1-65535 for a
// CONNECT), narrowed as the package documents.
func TestParseAuthority(t *testing.T) {
	for _, tc := range []struct {
		in, host string
		port     uint16
		literal  bool
		err      string
	}{
		{in: "example.com:443", host: "example.com", port: 443},
		{in: "Example.COM.:443", host: "Example.COM.", port: 443},
		{in: "_srv.example.com:1", host: "_srv.example.com", port: 1},
		{in: "0.0.0.0:9001", host: "0.0.0.0", port: 9001, literal: true},
		{in: "127.0.0.2:80", host: "127.0.0.2", port: 80, literal: true},
		{in: "169.254.169.254:80", host: "169.254.169.254", port: 80, literal: true},
		{in: "[::]:80", host: "::", port: 80, literal: true},
		{in: "[::1]:65535", host: "::1", port: 65535, literal: true},
		{in: "[::ffff:0.0.0.0]:80", host: "::ffff:0.0.0.0", port: 80, literal: true},
		{in: "[::FFFF:127.0.0.1]:80", host: "::ffff:127.0.0.1", port: 80, literal: true},
		{in: "::1:80", err: "must be in brackets"},
		{in: "[::1]", err: "missing port"},
		{in: "example.com", err: "missing port"},
		{in: "example.com:", err: "port"},
		{in: "example.com:0", err: "port"},
		{in: "example.com:65536", err: "port"},
		{in: "example.com:080", err: "port"},
		{in: "example.com:+80", err: "port"},
		{in: "example.com:http", err: "port"},
		{in: ":443", err: "empty host"},
		{in: "[]:443", err: "brackets must hold an IPv6"},
		{in: "[127.0.0.1]:443", err: "brackets must hold an IPv6"},
		{in: "[fe80::1%25eth0]:443", err: "zone"},
		{in: "[fe80::1%eth0]:443", err: "zone"},
		{in: "user:pass@example.com:443", err: "userinfo"},
		{in: "example.com@evil.test:443", err: "userinfo"},
		{in: "[::1]x:443", err: "junk after ]"},
		{in: "[::1:443", err: "missing ]"},
		{in: "127.1:80", err: "numeric host"},
		{in: "0x7f.1:80", err: "numeric host"},
		{in: "2130706433:80", err: "numeric host"},
		{in: "0177.0.0.1:80", err: "numeric host"},
		{in: "127.000.000.001:80", err: "numeric host"},
		{in: "1.2.3.4.:80", err: "numeric host"},
		{in: "a..b:80", err: "empty label"},
		{in: "exa mple.com:80", err: "not allowed"},
		{in: "ex\x00ample.com:80", err: "not allowed"},
		{in: "bücher.example:80", err: "not allowed"},
		{in: strings.Repeat("a", 64) + ".com:80", err: "63"},
		{in: strings.Repeat("a.", 130) + "com:80", err: "too long"},
	} {
		a, err := ParseAuthority(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrAuthority) {
				t.Errorf("ParseAuthority(%q) = %+v, %v; want error %q", tc.in, a, err, tc.err)
			}
			continue
		}
		if err != nil || a.Host != tc.host || a.Port != tc.port || a.Addr.IsValid() != tc.literal {
			t.Errorf("ParseAuthority(%q) = %+v, %v; want %s port %d literal %v", tc.in, a, err, tc.host, tc.port, tc.literal)
		}
	}
}

// FuzzParseAuthority: never a panic; what is accepted has a host and a
// port, no userinfo or zone, and its String form parses back to itself.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{
		"0.0.0.0:9001", "[::]:80", "[::ffff:0.0.0.0]:80", "[::ffff:127.0.0.1]:8080", "127.0.0.2:80", "[::1]:80",
		"::1:80", "169.254.169.254:80", "[fe80::1%25eth0]:80", "localhost:8080", "example.com:443",
		"a@b:1", "[::1]", "127.1:80", "0x7f.1:80", "2130706433:80", ":80", "[]:80", "host:0", "host:65536",
		"[1.2.3.4]:80", "x.:1", "[::1]:80:80", "\x00:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if a.Host == "" || a.Port == 0 || strings.ContainsAny(a.Host, "@%[]") {
			t.Fatalf("ParseAuthority(%q) = %+v", s, a)
		}
		again, err := ParseAuthority(a.String())
		if err != nil || again != a {
			t.Fatalf("ParseAuthority(%q) = %+v, but %q parses as %+v, %v", s, a, a.String(), again, err)
		}
	})
}
