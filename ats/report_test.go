package ats

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/golden"
)

func reportFromTestdata(t *testing.T, withApp bool) *Report {
	t.Helper()
	f, err := os.Open("testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var app *AppPolicy
	if withApp {
		if app, err = LoadPlist("testdata/Info.plist"); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := BuildReport(event.NewReader(f).Next, app)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestReportGolden(t *testing.T) {
	for _, tc := range []struct {
		name    string
		withApp bool
	}{
		{"report", true},
		{"report-noapp", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := reportFromTestdata(t, tc.withApp)
			var text, js bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			golden.Check(t, tc.name+".txt", text.Bytes())
			golden.Check(t, tc.name+".json", js.Bytes())
		})
	}
}

func TestReportStopsOnReadError(t *testing.T) {
	readErr := errors.New("disk on fire")
	calls := 0
	next := func() (*event.Event, error) {
		calls++
		if calls == 1 {
			return &event.Event{Kind: event.KindHTTP, Target: "a.example:80"}, nil
		}
		return nil, readErr
	}
	if _, err := BuildReport(next, nil); !errors.Is(err, readErr) {
		t.Fatalf("err = %v, want it to wrap %v", err, readErr)
	}
	empty := func() (*event.Event, error) { return nil, io.EOF }
	rep, err := BuildReport(empty, nil)
	if err != nil || rep.Connections != 0 || len(rep.Domains) != 0 {
		t.Fatalf("empty input: %+v, %v", rep, err)
	}
}

func TestOverBroad(t *testing.T) {
	tls10 := tunnel("api.example.com:443", version(tls.VersionTLS10), cipher(0xc013))
	tls13NoChain := tunnel("api.example.com:443", version(tls.VersionTLS13), cipher(0x1301), noChain)
	for _, tc := range []struct {
		name   string
		plist  string
		events []*event.Event
		want   []string // "finding key"
	}{
		{"needed entry is not over-broad", domains("api.example.com", kv("NSExceptionMinimumTLSVersion", str("TLSv1.0"))), []*event.Event{tls10}, nil},
		{"NSIncludesSubdomains only the domain itself", domains("api.example.com", kv("NSIncludesSubdomains", yes)+kv("NSExceptionMinimumTLSVersion", str("TLSv1.0"))), []*event.Event{tls10},
			[]string{"broader NSExceptionDomains[api.example.com].NSIncludesSubdomains=YES"}},
		{"NSIncludesSubdomains used", domains("example.com", kv("NSIncludesSubdomains", yes)+kv("NSExceptionMinimumTLSVersion", str("TLSv1.0"))), []*event.Event{tls10}, nil},
		{"unused entry with subdomains", domains("cdn.example.net", kv("NSIncludesSubdomains", yes)), []*event.Event{tls10},
			[]string{"unused NSExceptionDomains[cdn.example.net]"}},
		{"insecure HTTP not needed", domains("api.example.com", kv("NSExceptionAllowsInsecureHTTPLoads", yes)), []*event.Event{tunnel("api.example.com:443")},
			[]string{"broader NSExceptionDomains[api.example.com].NSExceptionAllowsInsecureHTTPLoads=YES"}},
		{"PFS off unconfirmed without the chain", domains("api.example.com", kv("NSExceptionRequiresForwardSecrecy", no)), []*event.Event{tls13NoChain},
			[]string{"unconfirmed NSExceptionDomains[api.example.com].NSExceptionRequiresForwardSecrecy=NO"}},
		{"arbitrary loads replaceable by entries", kv("NSAllowsArbitraryLoads", yes), []*event.Event{tls10, plainHTTP("http://www.example.com/")},
			[]string{"broader NSAllowsArbitraryLoads=YES"}},
		{"arbitrary loads needed for 3DES", kv("NSAllowsArbitraryLoads", yes), []*event.Event{tunnel("api.example.com:443", cipher(0xc012))}, nil},
		{"arbitrary loads unused", kv("NSAllowsArbitraryLoads", yes) + domains("api.example.com", kv("NSExceptionMinimumTLSVersion", str("TLSv1.0"))), []*event.Event{tls10},
			[]string{"unused NSAllowsArbitraryLoads=YES"}},
		{"web content cannot be judged", kv("NSAllowsArbitraryLoadsInWebContent", yes), []*event.Event{tls10},
			[]string{"unconfirmed NSAllowsArbitraryLoadsInWebContent=YES"}},
		{"local networking unused", kv("NSAllowsLocalNetworking", yes), []*event.Event{tls10}, []string{"unused NSAllowsLocalNetworking=YES"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := parse(t, tc.plist)
			i := 0
			rep, err := BuildReport(func() (*event.Event, error) {
				if i == len(tc.events) {
					return nil, io.EOF
				}
				i++
				return tc.events[i-1], nil
			}, a)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range rep.OverBroad {
				got = append(got, o.Finding+" "+o.Key)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("over-broad:\n got %q\nwant %q\n%+v", got, tc.want, rep.OverBroad)
			}
		})
	}
}

// TestSkippedBounded: a file of junk is counted, and only its first lines
// are quoted: the report and the heap do not grow with it.
func TestSkippedBounded(t *testing.T) {
	var in strings.Builder
	for range 5000 {
		in.WriteString("not an event\n")
	}
	r := event.NewReader(strings.NewReader(in.String()))
	defer r.Close()
	rep, err := BuildReport(r.Next, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.SkippedLines != 5000 || len(rep.Skipped) != maxSkipped {
		t.Fatalf("skipped_lines %d, %d quoted; want 5000 and %d", rep.SkippedLines, len(rep.Skipped), maxSkipped)
	}
	var out bytes.Buffer
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "skipped: 5000 undecodable lines; the first 10:") || strings.Count(out.String(), "\n") > 20 {
		t.Errorf("text report:\n%s", out.String())
	}
}
