package event

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
)

// Input is several events files read as one stream: plain or
// gzip-compressed (rotated backups), and "-" for standard input.
type Input struct {
	io.Reader
	// Size is the files' total size on disk, 0 when one is a pipe.
	Size    int64
	consume atomic.Int64
	closers []io.Closer
}

// Consumed is how many bytes of the files (compressed, as on disk) have
// been read, for progress against Size.
func (in *Input) Consumed() int64 { return in.consume.Load() }

// Close closes every file.
func (in *Input) Close() error {
	var errs []error
	for _, c := range in.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// gzipMagic starts every gzip stream (RFC 1952).
var gzipMagic = []byte{0x1f, 0x8b}

// Open opens paths, in order, as one Input; stdin is read for "-". Each
// file is decompressed when it starts with the gzip magic, whatever its
// name, and is followed by a newline so that a torn last line of one file
// (a crash) never swallows the first line of the next. Rotated files
// (name-2026-12-01T10-23-14.000.jsonl.gz) sort before the live file by
// name, so a shell glob such as events*.jsonl* gives them in time order.
func Open(paths []string, stdin io.Reader) (*Input, error) {
	if len(paths) == 0 {
		return nil, errors.New("event: no events file given")
	}
	in := &Input{}
	var parts []io.Reader
	sized := true
	for _, p := range paths {
		var f io.Reader
		if p == "-" {
			f, sized = stdin, false
		} else {
			file, err := os.Open(p)
			if err != nil {
				in.Close()
				return nil, fmt.Errorf("events file: %w", err)
			}
			in.closers = append(in.closers, file)
			if st, err := file.Stat(); err == nil && st.Mode().IsRegular() {
				in.Size += st.Size()
			} else {
				sized = false
			}
			f = file
		}
		parts = append(parts, &lazyFile{name: p, raw: &counter{r: f, n: &in.consume}}, strings.NewReader("\n"))
	}
	if !sized {
		in.Size = 0
	}
	in.Reader = io.MultiReader(parts...)
	return in, nil
}

// counter adds what it reads to n.
type counter struct {
	r io.Reader
	n *atomic.Int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// lazyFile sniffs its first bytes on the first Read, so that only the file
// being read holds a decompressor.
type lazyFile struct {
	name string
	raw  io.Reader
	r    io.Reader
}

func (l *lazyFile) Read(p []byte) (int, error) {
	if l.r == nil {
		br := bufio.NewReaderSize(l.raw, 64<<10)
		head, _ := br.Peek(len(gzipMagic))
		l.r = br
		if bytes.Equal(head, gzipMagic) {
			zr, err := gzip.NewReader(br)
			if err != nil {
				return 0, fmt.Errorf("events file %s: %w", l.name, err)
			}
			l.r = zr
		}
	}
	n, err := l.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("events file %s: %w", l.name, err)
	}
	return n, err
}
