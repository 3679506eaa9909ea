package scope

import (
	"net/netip"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
)

func TestGlobs(t *testing.T) {
	g := Globs{"*.Example.com", "api.test:8443"}
	for target, want := range map[string]bool{
		"a.example.com:443": true, "a.b.example.com": true, "example.com:443": false,
		"api.test:8443": true, "api.test:443": false, "[2001:db8::1]:443": false,
	} {
		if got := g.Match(target); got != want {
			t.Errorf("Match(%q) = %v, want %v", target, got, want)
		}
	}
	h := Hosts{Only: Globs{"*.example.com"}, Ignore: Globs{"cdn.example.com"}}
	if !h.Recorded("a.example.com:443") || h.Recorded("cdn.example.com:443") || h.Recorded("other.org:443") {
		t.Error("Hosts.Recorded")
	}
}

func TestFilterKeep(t *testing.T) {
	f := Filter{Clients: []netip.Prefix{netip.MustParsePrefix("192.168.1.23/32")}, Noise: []string{"ios"}}
	for _, tc := range []struct {
		ev   event.Event
		want bool
	}{
		{event.Event{Client: "192.168.1.23:5000", Target: "api.example.com:443", Kind: event.KindTunnel}, true},
		{event.Event{Client: "192.168.1.24:5000", Target: "api.example.com:443", Kind: event.KindTunnel}, false},
		{event.Event{Client: "192.168.1.23:5000", Target: "gateway.icloud.com:443", Kind: event.KindTunnel}, false},
		{event.Event{Kind: event.KindGap}, true},
	} {
		if got := f.Keep(&tc.ev); got != tc.want {
			t.Errorf("Keep(%s from %s) = %v, want %v", tc.ev.Target, tc.ev.Client, got, tc.want)
		}
	}
}
