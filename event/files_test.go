package event

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenRotatedGzipStdin reads a gzip-compressed rotated backup, the live
// file (with a torn last line, as kill -9 leaves it) and stdin as one
// stream: every event once, the torn line skipped and counted.
func TestOpenRotatedGzipStdin(t *testing.T) {
	dir := t.TempDir()
	backup := filepath.Join(dir, "inspect-events-2026-12-01T10-23-14.000.jsonl.gz")
	live := filepath.Join(dir, "inspect-events.jsonl")
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	io.WriteString(zw, "{\"id\":\"1\"}\n{\"id\":\"2\"}\n")
	zw.Close()
	if err := os.WriteFile(backup, z.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(live, []byte("{\"id\":\"3\"}\n{\"id\":\"4\",\"ki"), 0o644); err != nil {
		t.Fatal(err)
	}
	matches, err := filepath.Glob(filepath.Join(dir, "inspect-events*.jsonl*"))
	if err != nil || len(matches) != 2 || matches[0] != backup {
		t.Fatalf("glob order %v %v: want the backup first", matches, err)
	}
	in, err := Open(append(matches, "-"), strings.NewReader("{\"id\":\"5\"}"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	r := NewReaderOptions(in, ReadOptions{Workers: 2})
	defer r.Close()
	var ids []string
	skipped := 0
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if IsLineError(err) {
			skipped++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	if strings.Join(ids, ",") != "1,2,3,5" || skipped != 1 {
		t.Errorf("read %v with %d skipped, want 1,2,3,5 and 1", ids, skipped)
	}
	if in.Size != 0 {
		t.Errorf("size %d with stdin among the inputs, want 0 (unknown)", in.Size)
	}
}

func TestOpenMissingFile(t *testing.T) {
	if _, err := Open([]string{"/nonexistent/events.jsonl"}, nil); err == nil || !strings.Contains(err.Error(), "/nonexistent/events.jsonl") {
		t.Fatalf("err = %v, want the path named", err)
	}
}
