package event

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrLineTooLong is returned by Reader for a line over its size cap.
var ErrLineTooLong = errors.New("event: line too long")

// MaxLine caps one event line when reading: a line longer than this is
// reported, not loaded.
const MaxLine = 16 << 20

// Reader streams events from JSON lines without loading the whole input.
type Reader struct {
	sc   *bufio.Scanner
	line int
	n    int64
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	return &Reader{sc: sc}
}

// Next decodes the next event. It returns io.EOF at the end. A malformed
// line is returned as an error naming the line; the caller may go on.
func (r *Reader) Next() (*Event, error) {
	for r.sc.Scan() {
		r.line++
		b := r.sc.Bytes()
		r.n += int64(len(b)) + 1
		if len(b) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(b, &ev); err != nil {
			return nil, fmt.Errorf("event: line %d: %w", r.line, err)
		}
		return &ev, nil
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: line %d is over %d bytes", ErrLineTooLong, r.line+1, MaxLine)
		}
		return nil, fmt.Errorf("event: read: %w", err)
	}
	return nil, io.EOF
}

// BytesRead is how many bytes of input have been consumed, for progress.
func (r *Reader) BytesRead() int64 { return r.n }
