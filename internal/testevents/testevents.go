// Package testevents reads an events file back for tests of the writer:
// which lines are events, gap records or torn, in file order.
package testevents

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
)

// Contents is an events file, line by line.
type Contents struct {
	IDs   []string      // the events' ids, in file order
	Gaps  []event.Event // the gap records
	Torn  []string      // lines that are not JSON
	Order []string      // every line: an event's id, "gap" or "torn"
	// EndsWhole is true when the input is empty or ends with a newline.
	EndsWhole bool
}

// Stated is how many dropped events the gap records state.
func (c Contents) Stated() int64 {
	var n int64
	for _, g := range c.Gaps {
		n += g.Dropped
	}
	return n
}

// Read reads r to the end.
func Read(t testing.TB, r io.Reader) Contents {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	c := Contents{EndsWhole: len(b) == 0 || b[len(b)-1] == '\n'}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, event.MaxLine)
	for sc.Scan() {
		var e event.Event
		switch {
		case json.Unmarshal(sc.Bytes(), &e) != nil:
			c.Torn = append(c.Torn, sc.Text())
			c.Order = append(c.Order, "torn")
		case e.Kind == event.KindGap:
			c.Gaps = append(c.Gaps, e)
			c.Order = append(c.Order, "gap")
		default:
			c.IDs = append(c.IDs, e.ID)
			c.Order = append(c.Order, e.ID)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return c
}

// ReadFile reads the file at path.
func ReadFile(t testing.TB, path string) Contents {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Read(t, f)
}
