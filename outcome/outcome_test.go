package outcome

import (
	"os"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
)

// TestNoiseEvents classifies what the proxy wrote (testdata/noise.jsonl,
// recorded on main) for python's connect-and-close, a direct curl, curl
// through the proxy to a name that does not resolve (CONNECT and plain
// HTTP), to a closed port and to the proxy itself, and curl's SOCKS5 on the
// HTTP port: none reached a server.
func TestNoiseEvents(t *testing.T) {
	f, err := os.Open("testdata/noise.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := []string{NoRequest, ProxyRefused, DNS, Refused, DNS, ProxyRefused, NoRequest}
	r := event.NewReader(f)
	for i, w := range want {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if o := Of(ev); o.Reached || o.Reason != w {
			t.Errorf("event %d (%s %q): %+v, want never reached, %s", i+1, ev.Kind, ev.Target, o, w)
		}
	}
}

func TestClassify(t *testing.T) {
	for text, want := range map[string]string{
		"timing: connect 10.0.0.1:443: dial tcp 10.0.0.1:443: i/o timeout":                 Timeout,
		"dial tcp [2001:db8::1]:443: connect: network is unreachable":                      Unreachable,
		"read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer":                Reset,
		"tls: failed to verify certificate: x509: certificate signed by unknown authority": Verify,
		"remote error: tls: handshake failure":                                             TLSAlert,
		"something new":                                                                    Other,
		// The proxy's own refusals, in its own words (proxy/, access/).
		`access: bad authority "127.1:80": numeric host that is not a dotted-quad IPv4 address`: ProxyRefused,
		"the setup page is plain HTTP: open http://inspectproxy.setup/":                         ProxyRefused,
		"limits.max_connections (4096) reached":                                                 ProxyRefused,
	} {
		if got := Classify(text); got != want {
			t.Errorf("Classify(%q) = %s, want %s", text, got, want)
		}
	}
	if !strings.Contains(strings.Join(Classes(), ","), "proxy_refused") {
		t.Error("Classes lacks proxy_refused")
	}
}

// The setup page is the proxy's own: neither a failure nor a server.
func TestSetupPageIsNotAFailure(t *testing.T) {
	o := Of(&event.Event{Kind: event.KindHTTP, Target: "inspectproxy.setup:80"})
	if o.Failed() || o.Reached {
		t.Errorf("setup page visit: %+v", o)
	}
}
