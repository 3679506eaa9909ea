package event

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

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
	long := NewReader(strings.NewReader(strings.Repeat("x", MaxLine+10)))
	if _, err := long.Next(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("long line: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("{\"id\":\"a\",\"tcp\":{\"dns_ms\":1.5}}\n"))
	f.Add([]byte("{\"tls\":{\"chain\":[{\"subject\":\"x\"}]}}\n{"))
	f.Add([]byte("\x00\xff\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		for range 1000 {
			if _, err := r.Next(); err == io.EOF || errors.Is(err, ErrLineTooLong) {
				return
			}
		}
	})
}
