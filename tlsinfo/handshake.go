package tlsinfo

import "fmt"

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
