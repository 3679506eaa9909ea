package testdns

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestAnswers: Go's own resolver, the peer, reads what the table says.
func TestAnswers(t *testing.T) {
	s := Start(t, map[string][]netip.Addr{
		"both.test": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		"zero.test": {netip.MustParseAddr("0.0.0.0")},
	})
	r := s.Resolver()
	got, err := r.LookupNetIP(context.Background(), "ip", "both.test")
	if err != nil {
		t.Fatal(err)
	}
	var strs []string
	for _, a := range got {
		strs = append(strs, a.Unmap().String())
	}
	slices.Sort(strs)
	if strings.Join(strs, ",") != "192.0.2.1,2001:db8::1" {
		t.Errorf("both.test = %v", strs)
	}
	if got, err := r.LookupNetIP(context.Background(), "ip4", "zero.test"); err != nil || len(got) != 1 || got[0].Unmap().String() != "0.0.0.0" {
		t.Errorf("zero.test = %v, %v", got, err)
	}
	if _, err := r.LookupNetIP(context.Background(), "ip", "missing.test"); err == nil {
		t.Error("missing.test resolved")
	}
}
