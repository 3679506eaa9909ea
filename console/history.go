package console

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/inspectproxy/inspectproxy/event"
)

// ReadHistory returns the last n events of an events file, oldest first,
// reading it backwards from its end so that a large file is never read
// whole. Lines that are not events (a torn last line) are skipped; a
// missing file is no history.
func ReadHistory(path string, n int) ([]*event.Event, error) {
	if n <= 0 || path == "" || path == "-" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("console: history: %w", err)
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("console: history: %w", err)
	}
	const chunk = 256 << 10
	var chunks [][]byte // last first
	pos, lines := end, 0
	// n+1 newlines: the first line found may be cut by the chunk boundary.
	for pos > 0 && lines <= n {
		step := min(chunk, pos)
		pos -= step
		buf := make([]byte, step)
		if _, err := f.ReadAt(buf, pos); err != nil {
			return nil, fmt.Errorf("console: history: %w", err)
		}
		lines += bytes.Count(buf, []byte{'\n'})
		chunks = append(chunks, buf)
	}
	slices.Reverse(chunks)
	tail := bytes.Join(chunks, nil)
	if pos > 0 { // drop the partial first line
		if i := bytes.IndexByte(tail, '\n'); i >= 0 {
			tail = tail[i+1:]
		}
	}
	var evs []*event.Event
	r := event.NewReader(bytes.NewReader(tail))
	defer r.Close()
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, event.ErrLineTooLong) {
				return nil, fmt.Errorf("console: history %s: %w", path, err)
			}
			continue
		}
		if ev.Kind != event.KindGap {
			evs = append(evs, ev)
		}
	}
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	return evs, nil
}
