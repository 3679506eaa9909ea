package tlsinfo

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Handshake message types this package acts on (RFC 8446 section 4,
// RFC 5246 section 7.4, RFC 6066 section 8).
const (
	typeClientHello       uint8 = 1
	typeServerHello       uint8 = 2
	typeCertificate       uint8 = 11
	typeServerKeyExchange uint8 = 12
	typeServerHelloDone   uint8 = 14
	typeCertificateStatus uint8 = 22
)

const handshakeHeaderLen = 4

// Extension code points the parsers read.
const (
	extServerName          uint16 = 0
	extSupportedGroups     uint16 = 10
	extECPointFormats      uint16 = 11
	extSignatureAlgorithms uint16 = 13
	extALPN                uint16 = 16
	extSessionTicket       uint16 = 35
	extPreSharedKey        uint16 = 41
	extEarlyData           uint16 = 42
	extSupportedVersions   uint16 = 43
	extKeyShare            uint16 = 51
)

// msgParser reports where in a handshake message parsing failed.
type msgParser struct {
	name string // message name for errors, e.g. "client_hello"
	msg  []byte
}

// fail returns an ErrMalformed error locating at (the field's start, saved
// before reading it: a failed cryptobyte read may have consumed a length)
// within the message. cryptobyte only ever reslices, so every String read
// from msg shares its backing array and the difference in capacity is the
// offset.
func (p *msgParser) fail(at cryptobyte.String, what string) error {
	return fmt.Errorf("%w %s: bad %s at byte %d of %d",
		ErrMalformed, p.name, what, cap(p.msg)-cap(at), len(p.msg))
}

// body checks the 4-byte handshake header of p.msg and returns the body.
func (p *msgParser) body(typ uint8) (cryptobyte.String, error) {
	s := cryptobyte.String(p.msg)
	var t uint8
	var body cryptobyte.String
	if !s.ReadUint8(&t) || !s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return nil, p.fail(cryptobyte.String(p.msg), "handshake header")
	}
	if t != typ {
		return nil, fmt.Errorf("%w: got %s, want %s", ErrUnexpectedMessage, handshakeTypeName(t), p.name)
	}
	return body, nil
}

// extensions reads the extensions block, which must end the message.
func (p *msgParser) extensions(body *cryptobyte.String) (cryptobyte.String, error) {
	var exts cryptobyte.String
	at := *body
	if !body.ReadUint16LengthPrefixed(&exts) {
		return nil, p.fail(at, "extensions")
	}
	if !body.Empty() {
		return nil, p.fail(*body, "trailing bytes after extensions")
	}
	return exts, nil
}

// extension reads one extension's type and body.
func (p *msgParser) extension(exts *cryptobyte.String) (uint16, cryptobyte.String, error) {
	var typ uint16
	var data cryptobyte.String
	at := *exts
	if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
		return 0, nil, p.fail(at, "extension header")
	}
	return typ, data, nil
}

// uint16List reads a vector of uint16 values with a 1- or 2-byte length
// prefix.
func (p *msgParser) uint16List(s *cryptobyte.String, prefix int, what string) ([]uint16, error) {
	var list cryptobyte.String
	var ok bool
	at := *s
	if prefix == 1 {
		ok = s.ReadUint8LengthPrefixed(&list)
	} else {
		ok = s.ReadUint16LengthPrefixed(&list)
	}
	if !ok || len(list)%2 != 0 {
		return nil, p.fail(at, what)
	}
	out := make([]uint16, 0, len(list)/2)
	for !list.Empty() {
		var v uint16
		list.ReadUint16(&v)
		out = append(out, v)
	}
	return out, nil
}

// names maps wire values to names; nil for none, so that JSON omits the
// field.
func names(vals []uint16, name func(uint16) string) []string {
	if len(vals) == 0 {
		return nil
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = name(v)
	}
	return out
}

// hsReader reassembles handshake messages from the bodies of consecutive
// handshake records: a message may span records and a record may hold
// several messages. Messages that arrive whole are handed over in place;
// only a message split across reads or records is copied, into a buffer of
// exactly its size, and never one larger than max bytes.
type hsReader struct {
	buf  []byte // a partial message, header included
	want int    // full length of the buffered message once its header is in
	max  int
}

// feed consumes frag and calls fn with each complete message (header
// included). msg is only valid during the call.
func (h *hsReader) feed(frag []byte, fn func(msg []byte) error) error {
	for len(frag) > 0 {
		if len(h.buf) == 0 && len(frag) >= handshakeHeaderLen {
			n, err := h.messageLen(frag)
			if err != nil {
				return err
			}
			if len(frag) >= n {
				if err := fn(frag[:n]); err != nil {
					return err
				}
				frag = frag[n:]
				continue
			}
		}
		if len(h.buf) < handshakeHeaderLen {
			k := min(handshakeHeaderLen-len(h.buf), len(frag))
			h.buf = append(h.buf, frag[:k]...)
			frag = frag[k:]
			if len(h.buf) < handshakeHeaderLen {
				return nil
			}
			n, err := h.messageLen(h.buf)
			if err != nil {
				return err
			}
			h.want = n
			h.buf = append(make([]byte, 0, n), h.buf...)
		}
		k := min(h.want-len(h.buf), len(frag))
		h.buf = append(h.buf, frag[:k]...)
		frag = frag[k:]
		if len(h.buf) == h.want {
			msg := h.buf
			// Drop the buffer: most connections reassemble once, and a
			// proxy holds many idle Trackers.
			h.buf = nil
			if err := fn(msg); err != nil {
				return err
			}
		}
	}
	return nil
}

// messageLen returns the full length of the message whose header starts
// b (at least 4 bytes), refusing messages that could never be buffered.
func (h *hsReader) messageLen(b []byte) (int, error) {
	n := handshakeHeaderLen + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
	if n > h.max {
		return 0, fmt.Errorf("%w: %s message of %d bytes, limit %d",
			ErrBufferLimit, handshakeTypeName(b[0]), n, h.max)
	}
	return n, nil
}

// pending reports whether a message is partly buffered.
func (h *hsReader) pending() bool { return len(h.buf) > 0 }

// partial describes the partly buffered message for truncation errors.
func (h *hsReader) partial() string {
	if len(h.buf) < handshakeHeaderLen {
		return fmt.Sprintf("%d of 4 bytes into a handshake message header", len(h.buf))
	}
	return fmt.Sprintf("%d of %d bytes into a %s message", len(h.buf), h.want, handshakeTypeName(h.buf[0]))
}
