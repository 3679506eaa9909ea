package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReaderErrors(t *testing.T) {
	r := NewReader(strings.NewReader("{\"id\":\"a\"}\n\n{broken\n{\"id\":\"b\"}\n"))
	if ev, err := r.Next(); err != nil || ev.ID != "a" {
		t.Fatalf("first: %v %v", ev, err)
	}
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("broken line: %v", err)
	}
	if ev, err := r.Next(); err != nil || ev.ID != "b" {
		t.Fatalf("after a broken line the reader goes on: %v %v", ev, err)
	}
}

// TestReaderSkipsLongLines checks that a line over MaxLine is skipped and
// counted, and the next line is read, in every mode.
func TestReaderSkipsLongLines(t *testing.T) {
	in := "{\"id\":\"a\"}\n" + strings.Repeat("x", MaxLine+10) + "\n{\"id\":\"b\"}\n" + strings.Repeat("y", MaxLine+1)
	for _, o := range []ReadOptions{{}, {Lean: true, Workers: 3}} {
		r := NewReaderOptions(strings.NewReader(in), o)
		var ids []string
		var skipped []int
		for {
			ev, err := r.Next()
			if err == io.EOF {
				break
			}
			var le *LineError
			switch {
			case errors.As(err, &le) && errors.Is(err, ErrLineTooLong):
				skipped = append(skipped, le.Line)
			case err != nil:
				t.Fatalf("%+v: %v", o, err)
			default:
				ids = append(ids, ev.ID)
			}
		}
		r.Close()
		if strings.Join(ids, ",") != "a,b" || len(skipped) != 2 || skipped[0] != 2 || skipped[1] != 4 {
			t.Errorf("%+v: read %v, skipped lines %v; want a,b and lines 2 and 4", o, ids, skipped)
		}
	}
}

// TestLeanAndParallelDecode checks the lean, parallel decoder against
// encoding/json on every line of the sample capture: the fields it keeps
// are the same, the ones it skips are empty, and the order is kept.
func TestLeanAndParallelDecode(t *testing.T) {
	var in bytes.Buffer
	for range 200 {
		b, err := os.ReadFile("../report/testdata/events.jsonl")
		if err != nil {
			t.Fatal(err)
		}
		in.Write(b)
	}
	for _, headers := range []bool{false, true} {
		var want []Event
		for l := range strings.Lines(in.String()) {
			var ev Event
			if err := json.Unmarshal([]byte(l), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.TLS != nil {
				ev.TLS.ClientHello, ev.TLS.ServerHello, ev.TLS.JA3, ev.TLS.JA3Hash, ev.TLS.JA4, ev.TLS.JA3S, ev.TLS.JA3SHash = nil, nil, "", "", "", "", ""
			}
			for i := range ev.HTTP {
				if !headers {
					ev.HTTP[i].RequestHeaders, ev.HTTP[i].ResponseHeaders = nil, nil
				}
			}
			want = append(want, ev)
		}
		r := NewReaderOptions(bytes.NewReader(in.Bytes()), ReadOptions{Lean: true, Headers: headers, Workers: 4})
		for i := range want {
			got, err := r.Next()
			if err != nil {
				t.Fatalf("headers=%v, event %d: %v", headers, i, err)
			}
			if !reflect.DeepEqual(*got, want[i]) {
				t.Fatalf("headers=%v, event %d differs:\n got %+v\nwant %+v", headers, i, *got, want[i])
			}
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("after the last event: %v", err)
		}
		if r.BytesRead() != int64(in.Len()) {
			t.Errorf("BytesRead %d, want %d", r.BytesRead(), in.Len())
		}
		r.Close()
	}
}

func TestCloseStopsWorkers(t *testing.T) {
	b, err := os.ReadFile("../report/testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	r := NewReaderOptions(bytes.NewReader(bytes.Repeat(b, 2000)), ReadOptions{Workers: 2})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	r.Close() // goleak in TestMain checks that nothing is left running
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("{\"id\":\"a\",\"tcp\":{\"dns_ms\":1.5}}\n"))
	f.Add([]byte("{\"tls\":{\"chain\":[{\"subject\":\"x\"}]}}\n{"))
	f.Add([]byte("\x00\xff\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, o := range []ReadOptions{{}, {Lean: true}, {NoChain: true, Workers: 2}} {
			r := NewReaderOptions(bytes.NewReader(b), o)
			for range 1000 {
				if _, err := r.Next(); err == io.EOF || (err != nil && !IsLineError(err)) {
					break
				}
			}
			r.Close()
		}
	})
}
