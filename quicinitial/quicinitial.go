// Package quicinitial reads the TLS ClientHello (SNI, ALPN) that a QUIC
// client sends in its Initial packets. Initial packets are protected with
// keys derived from the client's Destination Connection ID and a published
// salt (RFC 9001 §5.2), so an observer needs no secret: this is how the
// WireGuard mode names the QUIC flows it refuses or forwards.
package quicinitial

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// Version1 is QUIC version 1 (RFC 9000).
const Version1 = 0x00000001

// saltV1 is the QUIC v1 initial salt (RFC 9001 §5.2).
var saltV1 = []byte{0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a}

// MaxCrypto bounds the CRYPTO stream held per flow: a ClientHello with a
// post-quantum key share spans two or three Initials, far below this.
const MaxCrypto = 16 << 10

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("quicinitial: malformed")

// Reader collects the client's CRYPTO stream from the Initial packets of
// one flow, fed datagram by datagram, until the ClientHello is complete.
type Reader struct {
	version uint32
	dcid    []byte
	keys    *keys
	crypto  []byte
	have    []span // received ranges of crypto, sorted, merged
	hello   *event.ClientHello
	err     error
}

type span struct{ from, to int }

// Feed reads one datagram the client sent. It returns true once nothing
// more is to be learnt: the ClientHello was read, or the flow is not a
// QUIC v1 client's, or it went wrong (see Result).
func (r *Reader) Feed(datagram []byte) (done bool) {
	if r.Done() {
		return true
	}
	for i := 0; len(datagram) > 0 && !r.Done(); i++ {
		if i > 0 && datagram[0]&0x80 == 0 {
			break // padding or a short-header packet behind the Initial
		}
		n, err := r.packet(datagram)
		if err != nil {
			r.err = err
			return true
		}
		datagram = datagram[n:]
	}
	return r.Done()
}

// Done reports whether Feed has nothing more to learn.
func (r *Reader) Done() bool { return r.hello != nil || r.err != nil }

// Result is what was read: the version always once a long-header packet
// was seen, SNI and ALPN once the ClientHello was complete; the error
// says why it was not.
func (r *Reader) Result() (*event.QUIC, error) {
	if r.version == 0 {
		if r.err == nil {
			return nil, fmt.Errorf("%w: no Initial packet seen", ErrMalformed)
		}
		return nil, r.err
	}
	q := &event.QUIC{Version: versionName(r.version)}
	if r.hello != nil {
		q.SNI, q.ALPN = r.hello.SNI, r.hello.ALPN
		return q, nil
	}
	if r.err == nil {
		return q, fmt.Errorf("%w: ClientHello incomplete (%d bytes of CRYPTO data from offset 0)", ErrMalformed, r.contiguous())
	}
	return q, r.err
}

func versionName(v uint32) string {
	if v == Version1 {
		return "1"
	}
	return fmt.Sprintf("0x%08x", v)
}

// packet reads one long-header packet and returns its length within the
// datagram (RFC 9000 §17.2).
func (r *Reader) packet(b []byte) (int, error) {
	s := cryptobyte.String(b)
	var first uint8
	var version uint32
	var dcid, scid cryptobyte.String
	if !s.ReadUint8(&first) || first&0x80 == 0 {
		return 0, fmt.Errorf("%w: not a long-header packet (first byte %#02x)", ErrMalformed, first)
	}
	if !s.ReadUint32(&version) || !s.ReadUint8LengthPrefixed(&dcid) || !s.ReadUint8LengthPrefixed(&scid) || len(dcid) > 20 || len(scid) > 20 {
		return 0, fmt.Errorf("%w: truncated long header", ErrMalformed)
	}
	if r.version == 0 {
		r.version = version
	}
	if version != Version1 {
		return 0, fmt.Errorf("quicinitial: QUIC version %s: only version 1 Initials are read", versionName(version))
	}
	typ := first >> 4 & 3
	if typ == 0 { // Initial
		var tokenLen uint64
		if !readVarint(&s, &tokenLen) || tokenLen > uint64(len(s)) || !s.Skip(int(tokenLen)) {
			return 0, fmt.Errorf("%w: truncated Initial token", ErrMalformed)
		}
	}
	var length uint64
	if !readVarint(&s, &length) || length > uint64(len(s)) {
		return 0, fmt.Errorf("%w: packet length %d past the datagram's %d bytes", ErrMalformed, length, len(s))
	}
	pnOffset := len(b) - len(s)
	end := pnOffset + int(length)
	if typ != 0 {
		return end, nil // a 0-RTT or Handshake packet coalesced behind
	}
	if r.dcid == nil || string(r.dcid) != string(dcid) {
		k, err := clientKeys(dcid)
		if err != nil {
			return 0, err
		}
		r.dcid, r.keys = append([]byte(nil), dcid...), k
	}
	payload, err := r.keys.open(b[:end], pnOffset)
	if err != nil {
		return 0, err
	}
	return end, r.frames(payload)
}

// frames reads the frames an Initial may carry (RFC 9000 §17.2.2):
// PADDING, PING, ACK, CRYPTO, CONNECTION_CLOSE.
func (r *Reader) frames(p []byte) error {
	s := cryptobyte.String(p)
	for len(s) > 0 {
		var typ uint64
		if !readVarint(&s, &typ) {
			return fmt.Errorf("%w: frame type", ErrMalformed)
		}
		switch typ {
		case 0x00, 0x01: // PADDING, PING
		case 0x02, 0x03: // ACK
			var largest, delay, count, first uint64
			if !readVarint(&s, &largest) || !readVarint(&s, &delay) || !readVarint(&s, &count) || !readVarint(&s, &first) || count > uint64(len(s)) {
				return fmt.Errorf("%w: ACK frame", ErrMalformed)
			}
			n := 2 * count
			if typ == 0x03 {
				n += 3 // ECN counts
			}
			var v uint64
			for range n {
				if !readVarint(&s, &v) {
					return fmt.Errorf("%w: ACK frame ranges", ErrMalformed)
				}
			}
		case 0x06: // CRYPTO
			var off, n uint64
			var data []byte
			if !readVarint(&s, &off) || !readVarint(&s, &n) || n > uint64(len(s)) || !s.ReadBytes(&data, int(n)) {
				return fmt.Errorf("%w: CRYPTO frame", ErrMalformed)
			}
			if err := r.addCrypto(off, data); err != nil {
				return err
			}
		case 0x1c: // CONNECTION_CLOSE
			return errors.New("quicinitial: the client closed the connection in its Initial")
		default:
			return fmt.Errorf("%w: frame type %#x in an Initial packet", ErrMalformed, typ)
		}
	}
	return nil
}

func (r *Reader) addCrypto(off uint64, data []byte) error {
	if off+uint64(len(data)) > MaxCrypto {
		return fmt.Errorf("quicinitial: CRYPTO data past %d bytes without a complete ClientHello", MaxCrypto)
	}
	from, to := int(off), int(off)+len(data)
	if to > len(r.crypto) {
		r.crypto = append(r.crypto, make([]byte, to-len(r.crypto))...)
	}
	copy(r.crypto[from:], data)
	r.have = addSpan(r.have, span{from, to})
	have := r.contiguous()
	if have < 4 {
		return nil
	}
	if r.crypto[0] != 1 {
		return fmt.Errorf("%w: first handshake message is of type %d, not a ClientHello", ErrMalformed, r.crypto[0])
	}
	msgLen := 4 + (int(r.crypto[1])<<16 | int(r.crypto[2])<<8 | int(r.crypto[3]))
	if msgLen > MaxCrypto {
		return fmt.Errorf("%w: ClientHello of %d bytes", ErrMalformed, msgLen)
	}
	if have < msgLen {
		return nil
	}
	ch, err := tlsinfo.ParseClientHello(r.crypto[:msgLen])
	if err != nil {
		return fmt.Errorf("quicinitial: %w", err)
	}
	r.hello = ch
	return nil
}

// contiguous is how many CRYPTO bytes from offset 0 have arrived.
func (r *Reader) contiguous() int {
	if len(r.have) == 0 || r.have[0].from != 0 {
		return 0
	}
	return r.have[0].to
}

// addSpan inserts s into sorted, merged spans.
func addSpan(spans []span, s span) []span {
	out := spans[:0:0]
	for _, t := range spans {
		switch {
		case t.to < s.from:
			out = append(out, t)
		case s.to < t.from:
			out = append(out, s)
			s = t
		default:
			s = span{min(s.from, t.from), max(s.to, t.to)}
		}
	}
	return append(out, s)
}

// readVarint reads a QUIC variable-length integer (RFC 9000 §16).
func readVarint(s *cryptobyte.String, v *uint64) bool {
	var first uint8
	if !s.ReadUint8(&first) {
		return false
	}
	n := 1 << (first >> 6)
	*v = uint64(first & 0x3f)
	for i := 1; i < n; i++ {
		var b uint8
		if !s.ReadUint8(&b) {
			return false
		}
		*v = *v<<8 | uint64(b)
	}
	return true
}

// keys are a client's Initial packet protection keys (RFC 9001 §5).
type keys struct {
	aead cipher.AEAD
	iv   []byte
	hp   cipher.Block
}

func clientKeys(dcid []byte) (*keys, error) {
	initial, err := hkdf.Extract(sha256.New, dcid, saltV1)
	if err != nil {
		return nil, err
	}
	secret, err := expandLabel(initial, "client in", 32)
	if err != nil {
		return nil, err
	}
	key, err1 := expandLabel(secret, "quic key", 16)
	iv, err2 := expandLabel(secret, "quic iv", 12)
	hp, err3 := expandLabel(secret, "quic hp", 16)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	hpBlock, err := aes.NewCipher(hp)
	if err != nil {
		return nil, err
	}
	return &keys{aead: aead, iv: iv, hp: hpBlock}, nil
}

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context
// (RFC 8446 §7.1).
func expandLabel(secret []byte, label string, n int) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint16(uint16(n))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("tls13 " + label)) })
	b.AddUint8(0)
	info, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	return hkdf.Expand(sha256.New, secret, string(info), n)
}

// open removes header protection and decrypts one Initial packet
// (RFC 9001 §5.3, §5.4). pkt is the whole packet; pnOffset is where its
// packet number starts. pkt is not changed.
func (k *keys) open(pkt []byte, pnOffset int) ([]byte, error) {
	if pnOffset+4+16 > len(pkt) {
		return nil, fmt.Errorf("%w: Initial packet of %d bytes too short to sample", ErrMalformed, len(pkt))
	}
	var mask [16]byte
	k.hp.Encrypt(mask[:], pkt[pnOffset+4:pnOffset+20])
	first := pkt[0] ^ mask[0]&0x0f
	pnLen := int(first&3) + 1
	header := append([]byte(nil), pkt[:pnOffset+pnLen]...)
	header[0] = first
	var pn uint64
	for i := range pnLen {
		header[pnOffset+i] ^= mask[1+i]
		pn = pn<<8 | uint64(header[pnOffset+i])
	}
	nonce := append([]byte(nil), k.iv...)
	var pnb [8]byte
	binary.BigEndian.PutUint64(pnb[:], pn)
	for i := range 8 {
		nonce[len(nonce)-8+i] ^= pnb[i]
	}
	plain, err := k.aead.Open(nil, nonce, pkt[pnOffset+pnLen:], header)
	if err != nil {
		return nil, fmt.Errorf("quicinitial: Initial packet %d does not decrypt with the keys of its connection ID: %w", pn, err)
	}
	return plain, nil
}
