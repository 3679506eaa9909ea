package tlsinfo

import (
	"errors"
	"fmt"
)

// Record content types (RFC 8446 section 5.1, RFC 6520 for heartbeat).
const (
	recordChangeCipherSpec uint8 = 20
	recordAlert            uint8 = 21
	recordHandshake        uint8 = 22
	recordApplicationData  uint8 = 23
	recordHeartbeat        uint8 = 24
)

const (
	recordHeaderLen = 5
	// maxRecordLen is the largest TLSCiphertext fragment any version allows
	// (2^14 plus 2048 bytes of expansion, RFC 5246 section 6.2.3).
	maxRecordLen = 1<<14 + 2048
)

// Sentinel errors. Errors returned by this package wrap one of them and add
// the evidence (offsets, bytes, sizes).
var (
	// ErrMalformed means bytes that cannot be TLS as written.
	ErrMalformed = errors.New("tlsinfo: malformed")
	// ErrUnexpectedMessage means well-formed messages in an order TLS forbids.
	ErrUnexpectedMessage = errors.New("tlsinfo: unexpected message")
	// ErrTruncated means a direction ended inside a record or message.
	ErrTruncated = errors.New("tlsinfo: truncated")
	// ErrBufferLimit means a handshake message needed more reassembly
	// buffer than the Tracker was allowed.
	ErrBufferLimit = errors.New("tlsinfo: buffer limit exceeded")
)

// recordHeader is a parsed TLSPlaintext/TLSCiphertext header.
type recordHeader struct {
	typ     uint8
	version uint16
	length  int
	offset  int64 // stream offset of the header's first byte
}

// recordHandler receives the records a recordReader finds. Returning an
// error stops the reader; the error is handed back to its caller.
type recordHandler interface {
	// recordStart is called once a record header is complete and valid.
	recordStart(h recordHeader) error
	// recordBody is called with consecutive fragments of the current
	// record's body, in order; last is true on the fragment that ends it.
	// A zero-length record gets one call with an empty fragment.
	recordBody(frag []byte, last bool) error
}

// recordReader splits one direction of a TCP stream into TLS records,
// whatever the chunking: a header may arrive one byte at a time and a body
// may be spread over many reads. Only the 5 header bytes are ever copied.
type recordReader struct {
	off    int64 // stream offset of the next byte to consume
	hdr    [recordHeaderLen]byte
	nhdr   int
	cur    recordHeader
	remain int // body bytes of cur still to come; -1 between records
}

func newRecordReader() recordReader { return recordReader{remain: -1} }

// feed consumes all of p, calling h for what it finds, and stops at the
// first error (from validation or from h).
func (r *recordReader) feed(p []byte, h recordHandler) error {
	for len(p) > 0 {
		if r.remain < 0 {
			n := copy(r.hdr[r.nhdr:], p)
			if err := r.checkHeader(r.nhdr, r.nhdr+n); err != nil {
				return err
			}
			r.nhdr += n
			r.off += int64(n)
			p = p[n:]
			if r.nhdr < recordHeaderLen {
				return nil
			}
			r.cur = recordHeader{
				typ:     r.hdr[0],
				version: uint16(r.hdr[1])<<8 | uint16(r.hdr[2]),
				length:  int(r.hdr[3])<<8 | int(r.hdr[4]),
				offset:  r.off - recordHeaderLen,
			}
			r.nhdr = 0
			r.remain = r.cur.length
			if err := h.recordStart(r.cur); err != nil {
				return err
			}
			if r.remain == 0 {
				r.remain = -1
				if err := h.recordBody(nil, true); err != nil {
					return err
				}
				continue
			}
		}
		n := min(len(p), r.remain)
		r.remain -= n
		r.off += int64(n)
		frag := p[:n]
		p = p[n:]
		last := r.remain == 0
		if last {
			r.remain = -1
		}
		if err := h.recordBody(frag, last); err != nil {
			return err
		}
	}
	return nil
}

// checkHeader validates header bytes [from, to) as soon as they arrive, so
// that a stream that is not TLS is rejected on its first byte rather than
// after five.
func (r *recordReader) checkHeader(from, to int) error {
	for i := from; i < to; i++ {
		b := r.hdr[i]
		switch i {
		case 0:
			if b < recordChangeCipherSpec || b > recordHeartbeat {
				return r.headerError(i+1, fmt.Sprintf("unknown content type 0x%02x", b))
			}
		case 1:
			if b != 3 {
				return r.headerError(i+1, fmt.Sprintf("version major byte 0x%02x, want 0x03", b))
			}
		case 4:
			typ := r.hdr[0]
			length := int(r.hdr[3])<<8 | int(b)
			if length > maxRecordLen {
				return r.headerError(i+1, fmt.Sprintf("length %d exceeds the %d-byte maximum", length, maxRecordLen))
			}
			// Handshake, alert and change_cipher_spec records are never
			// empty (RFC 8446 section 5.1), encrypted or not.
			if length == 0 && typ != recordApplicationData && typ != recordHeartbeat {
				return r.headerError(i+1, "empty "+contentTypeName(typ)+" record")
			}
		}
	}
	return nil
}

func (r *recordReader) headerError(n int, why string) error {
	return &headerError{offset: r.off - int64(r.nhdr), header: append([]byte(nil), r.hdr[:n]...), why: why}
}

// headerError is a record header that cannot be TLS. The Tracker reads one
// at stream offset 0 as "this stream is not TLS at all".
type headerError struct {
	offset int64
	header []byte // the header bytes up to the offending one
	why    string
}

func (e *headerError) Error() string {
	return fmt.Sprintf("%v record header at stream offset %d (% x): %s", ErrMalformed, e.offset, e.header, e.why)
}

func (e *headerError) Unwrap() error { return ErrMalformed }

// partial describes a record left incomplete, for truncation errors; ""
// when the stream stopped on a record boundary.
func (r *recordReader) partial() string {
	switch {
	case r.nhdr > 0:
		return fmt.Sprintf("%d of 5 bytes into a record header at stream offset %d", r.nhdr, r.off-int64(r.nhdr))
	case r.remain > 0:
		return fmt.Sprintf("%d of %d bytes into a %s record at stream offset %d",
			r.cur.length-r.remain, r.cur.length, contentTypeName(r.cur.typ), r.cur.offset)
	}
	return ""
}
