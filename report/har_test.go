package report

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/inspectproxy/inspectproxy/internal/golden"
)

func writeGoldenHAR(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open(goldenEvents)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b bytes.Buffer
	if err := WriteHAR(&b, f, Options{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestHARGolden(t *testing.T) {
	golden.Check(t, "report.har", writeGoldenHAR(t))
}

// harSchema compiles the HAR 1.2 schema of the npm package har-schema,
// kept in testdata/har-schema, with formats (uri, date-time, ipv4, ipv6)
// asserted rather than only annotated.
func harSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	const base = "https://har-schema.invalid/"
	files, err := filepath.Glob("testdata/har-schema/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no schema files: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := c.AddResource(base+filepath.Base(file), doc); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.Compile(base + "har.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validateHAR(t *testing.T, s *jsonschema.Schema, har []byte) error {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(har))
	if err != nil {
		return err
	}
	return s.Validate(doc)
}

func TestHARValidates(t *testing.T) {
	s := harSchema(t)
	har := writeGoldenHAR(t)
	if err := validateHAR(t, s, har); err != nil {
		t.Fatalf("golden HAR fails the HAR 1.2 schema: %v", err)
	}
	// The schema must be able to say no, or passing proves nothing.
	for _, tc := range []struct{ name, old, new string }{
		{"relative url", `"url": "https://api.example.com:443"`, `"url": "api example"`},
		{"bad server ip", `"serverIPAddress": "203.0.113.10"`, `"serverIPAddress": "api.example.com"`},
		{"bad date", `"startedDateTime": "2025-03-14T09:30:00.3Z"`, `"startedDateTime": "yesterday"`},
		{"no timings", `"timings": {`, `"timingz": {`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(har, []byte(tc.old)) {
				t.Fatalf("golden HAR has no %s", tc.old)
			}
			if err := validateHAR(t, s, bytes.Replace(har, []byte(tc.old), []byte(tc.new), 1)); err == nil {
				t.Errorf("schema accepted a HAR with %s", tc.name)
			}
		})
	}
}

// TestHARTimings checks the HAR 1.2 timing rules the schema cannot express.
func TestHARTimings(t *testing.T) {
	var har struct {
		Log struct {
			Version string
			Entries []struct {
				Time    float64
				Request struct {
					Method string
					URL    string
				}
				Timings    map[string]float64
				Connection string
			}
		}
	}
	if err := json.Unmarshal(writeGoldenHAR(t), &har); err != nil {
		t.Fatal(err)
	}
	if har.Log.Version != "1.2" || len(har.Log.Entries) != 15 {
		t.Fatalf("version %q, %d entries; want 1.2 and 15 (9 tunnels, 6 requests)", har.Log.Version, len(har.Log.Entries))
	}
	dialled := map[string]int{}
	for _, e := range har.Log.Entries {
		t.Run(e.Request.Method+" "+e.Request.URL, func(t *testing.T) {
			tm := e.Timings
			sum := 0.0
			for _, k := range []string{"blocked", "dns", "connect", "send", "wait", "receive"} {
				sum += math.Max(tm[k], 0)
			}
			if math.Abs(sum-e.Time) > 0.0015 {
				t.Errorf("time %v, want the sum of the timings but ssl, %v", e.Time, sum)
			}
			for _, k := range []string{"send", "wait", "receive"} {
				if v, ok := tm[k]; !ok || v < 0 {
					t.Errorf("%s = %v, ok %v: HAR requires it, non-negative", k, v, ok)
				}
			}
			for _, k := range []string{"blocked", "dns", "connect", "ssl"} {
				if v, ok := tm[k]; !ok || v < -1 {
					t.Errorf("%s = %v, ok %v: want a time or -1", k, v, ok)
				}
			}
			if tm["ssl"] >= 0 && tm["connect"] < tm["ssl"] {
				t.Errorf("connect %v < ssl %v: ssl must be included in connect", tm["connect"], tm["ssl"])
			}
			if strings.HasPrefix(e.Request.URL, "https://") && e.Request.Method != "CONNECT" && tm["connect"] >= 0 && tm["ssl"] < 0 {
				t.Errorf("a new https connection without ssl time")
			}
		})
		if e.Timings["connect"] >= 0 {
			dialled[e.Connection]++
		}
	}
	// A connection is dialled once: every later request on it is reused, -1.
	for c, n := range dialled {
		if n > 1 {
			t.Errorf("connection %s has connect times in %d entries, want 1", c, n)
		}
	}
}
