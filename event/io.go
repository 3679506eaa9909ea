package event

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	gojson "github.com/goccy/go-json"
)

// ErrLineTooLong is wrapped by the LineError of a line over MaxLine, which
// Reader skips whole.
var ErrLineTooLong = errors.New("event: line too long")

// MaxLine caps one event line when reading: a longer line is skipped,
// never loaded.
const MaxLine = 16 << 20

// LineError is a line that is not an event: malformed (a torn last line
// after a crash), or over MaxLine. Reader goes on after it.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("event: line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// IsLineError reports whether err is a skipped line, after which reading
// goes on; any other error from Next ends the input.
func IsLineError(err error) bool {
	var le *LineError
	return errors.As(err, &le)
}

// ReadOptions choose what Reader decodes. Decoding is most of a report's
// time, and most of an event's bytes are facts no report reads.
type ReadOptions struct {
	// Lean skips the ClientHello and ServerHello, the JA3/JA4 fingerprints
	// and the HTTP header fields: they are left empty.
	Lean bool
	// NoChain skips certificate chains too (tls.chain left empty).
	NoChain bool
	// Headers keeps the HTTP header fields that Lean skips (HAR has them).
	Headers bool
	// Workers is how many goroutines decode lines. 0 or 1 decodes in Next;
	// more decode batches of lines in parallel, in order. Call Close when
	// not reading to the end.
	Workers int
}

// Reader streams events from JSON lines without loading the whole input.
type Reader struct {
	src    *lineSource
	decode func([]byte) (*Event, error)
	n      int64
	// parallel decoding
	pipe  *pipeline
	batch *batch
	pos   int
}

// NewReader returns a Reader that decodes every field, in Next.
func NewReader(r io.Reader) *Reader { return NewReaderOptions(r, ReadOptions{}) }

// NewReaderOptions returns a Reader with o.
func NewReaderOptions(r io.Reader, o ReadOptions) *Reader {
	rd := &Reader{src: newLineSource(r), decode: decoder(o)}
	if o.Workers > 1 {
		rd.pipe = startPipeline(rd.src, rd.decode, o.Workers)
	}
	return rd
}

// Workers is how many decoders suit this machine: one per CPU, at most 4
// (past that the single line splitter and the consumer are the bound).
func Workers() int { return min(runtime.GOMAXPROCS(0), 4) }

// Next decodes the next event. It returns io.EOF at the end, a *LineError
// for a line that is not an event (the caller may go on), and any other
// error when the input failed.
func (r *Reader) Next() (*Event, error) {
	if r.pipe == nil {
		for {
			l, err := r.src.next()
			if err != nil {
				return nil, err
			}
			r.n = r.src.n
			if l.err != nil {
				return nil, l.err
			}
			if len(l.data) == 0 {
				continue
			}
			ev, err := r.decode(l.data)
			if err != nil {
				return nil, &LineError{Line: l.line, Err: err}
			}
			return ev, nil
		}
	}
	for {
		if r.batch == nil || r.pos == len(r.batch.out) {
			if r.batch != nil && r.batch.err != nil {
				return nil, r.batch.err
			}
			b, ok := <-r.pipe.order
			if !ok {
				return nil, io.EOF
			}
			<-b.done
			r.batch, r.pos = b, 0
			r.n = b.n
			continue
		}
		o := r.batch.out[r.pos]
		r.batch.out[r.pos] = decoded{}
		r.pos++
		if o.err != nil || o.ev != nil {
			return o.ev, o.err
		}
	}
}

// BytesRead is how many bytes of input have been consumed, for progress.
func (r *Reader) BytesRead() int64 { return r.n }

// Close stops the decoding goroutines of a Reader with Workers > 1 that is
// not read to the end. It does not close the input.
func (r *Reader) Close() {
	if r.pipe != nil {
		r.pipe.stop()
	}
}

// line is one line of input, or why it was skipped.
type line struct {
	line int
	data []byte
	err  error
}

// lineSource splits input into lines, skipping (with a LineError) those
// over MaxLine without holding them.
type lineSource struct {
	br   *bufio.Reader
	buf  []byte
	line int
	n    int64
	err  error
}

func newLineSource(r io.Reader) *lineSource {
	return &lineSource{br: bufio.NewReaderSize(r, 256<<10)}
}

// next returns the next line; data is valid until the next call. At the
// end it returns io.EOF, or the read error.
func (s *lineSource) next() (line, error) {
	if s.err != nil {
		return line{}, s.err
	}
	s.buf = s.buf[:0]
	tooLong := false
	for {
		chunk, err := s.br.ReadSlice('\n')
		s.n += int64(len(chunk))
		if !tooLong {
			if len(s.buf)+len(bytes.TrimSuffix(chunk, []byte{'\n'})) > MaxLine {
				tooLong, s.buf = true, s.buf[:0]
			} else if err == nil && len(s.buf) == 0 {
				// The common case: the line is whole in the reader's buffer.
				s.line++
				return line{line: s.line, data: chunk[:len(chunk)-1]}, nil
			} else {
				s.buf = append(s.buf, chunk...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			s.err = io.EOF
			if len(s.buf) == 0 && !tooLong {
				return line{}, io.EOF
			}
		case err != nil:
			s.err = fmt.Errorf("event: read: %w", err)
			return line{}, s.err
		}
		s.line++
		if tooLong {
			return line{line: s.line, err: &LineError{Line: s.line, Err: fmt.Errorf("%w: over %d bytes, skipped", ErrLineTooLong, MaxLine)}}, nil
		}
		return line{line: s.line, data: bytes.TrimSuffix(s.buf, []byte{'\n'})}, nil
	}
}

// decoder returns the line decoder for o. goccy/go-json decodes the same
// struct tags as encoding/json about 3× faster, and skips a value it is
// not asked for faster still (bench/RESULTS.md has the profile figures).
func decoder(o ReadOptions) func([]byte) (*Event, error) {
	switch {
	case o.NoChain && o.Headers:
		return decodeLean[leanTLSNoChain, *leanTLSNoChain, HTTP, *HTTP]
	case o.NoChain:
		return decodeLean[leanTLSNoChain, *leanTLSNoChain, leanHTTP, *leanHTTP]
	case o.Lean && o.Headers:
		return decodeLean[leanTLS, *leanTLS, HTTP, *HTTP]
	case o.Lean:
		return decodeLean[leanTLS, *leanTLS, leanHTTP, *leanHTTP]
	}
	return func(b []byte) (*Event, error) {
		var ev Event
		if err := safeUnmarshal(b, &ev); err != nil {
			return nil, err
		}
		return &ev, nil
	}
}

// safeUnmarshal is goccy's Unmarshal; a panic on hostile input is turned
// into an error, so a bad line is skipped, never a crash.
func safeUnmarshal(b []byte, v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("undecodable: %v", p)
		}
	}()
	return gojson.Unmarshal(b, v)
}

// skip decodes nothing: a field of this type, at a shallower depth than
// the embedded field of the same JSON name, hides it from the decoder.
type skip struct{}

func (*skip) UnmarshalJSON([]byte) error { return nil }

// leanTLS is TLS without the hellos and fingerprints.
type leanTLS struct {
	TLS
	ClientHello skip `json:"client_hello"`
	ServerHello skip `json:"server_hello"`
	JA3         skip `json:"ja3"`
	JA3Hash     skip `json:"ja3_hash"`
	JA4         skip `json:"ja4"`
	JA3S        skip `json:"ja3s"`
	JA3SHash    skip `json:"ja3s_hash"`
}

func (t *leanTLS) tls() *TLS { return &t.TLS }

// leanTLSNoChain is leanTLS without the chain.
type leanTLSNoChain struct {
	leanTLS
	Chain skip `json:"chain"`
}

type leanHTTP struct {
	HTTP
	RequestHeaders  skip `json:"request_headers"`
	ResponseHeaders skip `json:"response_headers"`
}

func (h *leanHTTP) http() HTTP { return h.HTTP }

// http makes HTTP its own lean form, for readers that keep the headers.
func (h *HTTP) http() HTTP { return *h }

type leanUpstream[T any] struct {
	Upstream
	TLS *T `json:"tls"`
}

type leanEvent[T, H any] struct {
	Event
	TLS       *T                `json:"tls"`
	Upstreams []leanUpstream[T] `json:"upstreams"`
	HTTP      []H               `json:"http"`
}

type tlsHolder interface{ tls() *TLS }

type httpHolder interface{ http() HTTP }

func decodeLean[T any, PT interface {
	*T
	tlsHolder
}, H any, PH interface {
	*H
	httpHolder
}](b []byte) (*Event, error) {
	var l leanEvent[T, H]
	if err := safeUnmarshal(b, &l); err != nil {
		return nil, err
	}
	ev := l.Event
	if l.TLS != nil {
		ev.TLS = PT(l.TLS).tls()
	}
	if len(l.Upstreams) > 0 {
		ev.Upstreams = make([]Upstream, len(l.Upstreams))
		for i := range l.Upstreams {
			ev.Upstreams[i] = l.Upstreams[i].Upstream
			if t := l.Upstreams[i].TLS; t != nil {
				ev.Upstreams[i].TLS = PT(t).tls()
			}
		}
	}
	if len(l.HTTP) > 0 {
		ev.HTTP = make([]HTTP, len(l.HTTP))
		for i := range l.HTTP {
			ev.HTTP[i] = PH(&l.HTTP[i]).http()
		}
	}
	return &ev, nil
}

// pipeline decodes batches of lines on several goroutines and hands them
// back in input order: the splitter sends each batch both to the workers
// and, in order, to the consumer, who waits for it to be done.
type pipeline struct {
	order chan *batch
	quit  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// batchBytes is about how much input one batch holds; batchSlack room
// for the line that crosses it (events are a few kB; a longer one grows
// the batch).
const (
	batchBytes = 512 << 10
	batchSlack = 64 << 10
)

type batch struct {
	data  []byte
	lines []line // data subslices
	out   []decoded
	n     int64 // input consumed after this batch
	err   error // the input's error after this batch, or a LineError
	done  chan struct{}
}

type decoded struct {
	ev  *Event
	err error
}

func startPipeline(src *lineSource, decode func([]byte) (*Event, error), workers int) *pipeline {
	p := &pipeline{order: make(chan *batch, 2*workers), quit: make(chan struct{})}
	jobs := make(chan *batch, workers)
	p.wg.Add(workers + 1)
	for range workers {
		go func() {
			defer p.wg.Done()
			for b := range jobs {
				b.out = make([]decoded, len(b.lines))
				for i, l := range b.lines {
					switch {
					case l.err != nil:
						b.out[i].err = l.err
					case len(l.data) > 0:
						ev, err := decode(l.data)
						if err != nil {
							err = &LineError{Line: l.line, Err: err}
						}
						b.out[i] = decoded{ev: ev, err: err}
					}
				}
				close(b.done)
			}
		}()
	}
	go func() {
		defer p.wg.Done()
		defer close(jobs)
		defer close(p.order)
		for {
			// Sized for the batch and the line that ends it, so that
			// appending never copies what was read (a third of the
			// reader's CPU went to growing this from empty).
			b := &batch{done: make(chan struct{}), data: make([]byte, 0, batchBytes+batchSlack)}
			for len(b.data) < batchBytes {
				l, err := src.next()
				if err != nil {
					if err != io.EOF {
						b.err = err
					}
					break
				}
				b.data = append(b.data, l.data...)
				b.lines = append(b.lines, l)
			}
			// The lines still point into the reader's buffer: point them
			// at their copies in b.data (nil stays nil).
			off := 0
			for i := range b.lines {
				if d := b.lines[i].data; d != nil {
					b.lines[i].data = b.data[off : off+len(d) : off+len(d)]
					off += len(d)
				}
			}
			b.n = src.n
			end := src.err != nil
			if len(b.lines) == 0 && b.err == nil {
				return
			}
			select {
			case p.order <- b:
			case <-p.quit:
				return
			}
			select {
			case jobs <- b:
			case <-p.quit:
				close(b.done)
				return
			}
			if end {
				return
			}
		}
	}()
	return p
}

func (p *pipeline) stop() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
	for range p.order {
	}
}
