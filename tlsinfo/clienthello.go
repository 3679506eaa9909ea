package tlsinfo

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Extension code points the parsers read.
const (
	extServerName          uint16 = 0
	extStatusRequest       uint16 = 5
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

// countExtensions counts the well-formed extensions of a block, to size
// the slices that hold them.
func countExtensions(exts cryptobyte.String) int {
	n := 0
	var typ uint16
	var data cryptobyte.String
	for exts.ReadUint16(&typ) && exts.ReadUint16LengthPrefixed(&data) {
		n++
	}
	return n
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

// ParseClientHello parses a complete ClientHello handshake message, header
// included (RFC 8446 section 4.1.2; the extensions block is optional before
// TLS 1.3). It validates the framing of every field and of the extensions
// it reads; unknown extensions are kept by code point only.
func ParseClientHello(msg []byte) (*ClientHello, error) {
	p := msgParser{name: "client_hello", msg: msg}
	body, err := p.body(typeClientHello)
	if err != nil {
		return nil, err
	}
	ch := &ClientHello{Size: len(body)}
	raw := &ch.Raw
	var sessionID, compression cryptobyte.String
	if !body.ReadUint16(&raw.LegacyVersion) {
		return nil, p.fail(body, "legacy_version")
	}
	if !body.Skip(32) {
		return nil, p.fail(body, "random")
	}
	at := body
	if !body.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 {
		return nil, p.fail(at, "legacy_session_id")
	}
	if raw.CipherSuites, err = p.uint16List(&body, 2, "cipher_suites"); err != nil {
		return nil, err
	}
	at = body
	if !body.ReadUint8LengthPrefixed(&compression) || compression.Empty() {
		return nil, p.fail(at, "legacy_compression_methods")
	}
	ch.LegacyVersion = VersionName(raw.LegacyVersion)
	ch.CipherSuites = names(raw.CipherSuites, CipherSuiteName)
	if body.Empty() {
		return ch, nil
	}
	exts, err := p.extensions(&body)
	if err != nil {
		return nil, err
	}
	n := countExtensions(exts)
	raw.Extensions = make([]uint16, 0, n)
	ch.Extensions = make([]string, 0, n)
	for !exts.Empty() {
		typ, data, err := p.extension(&exts)
		if err != nil {
			return nil, err
		}
		raw.Extensions = append(raw.Extensions, typ)
		ch.Extensions = append(ch.Extensions, ExtensionName(typ))
		if err := ch.parseExtension(&p, typ, data); err != nil {
			return nil, err
		}
	}
	ch.SupportedVersions = names(raw.SupportedVersions, VersionName)
	ch.SupportedGroups = names(raw.SupportedGroups, GroupName)
	ch.SignatureAlgorithms = names(raw.SignatureAlgorithms, SignatureSchemeName)
	ch.KeyShares = names(raw.KeyShares, GroupName)
	for _, f := range raw.ECPointFormats {
		ch.ECPointFormats = append(ch.ECPointFormats, ECPointFormatName(f))
	}
	ch.ALPN = raw.ALPN
	return ch, nil
}

func (ch *ClientHello) parseExtension(p *msgParser, typ uint16, data cryptobyte.String) error {
	raw := &ch.Raw
	what := ExtensionName(typ) + " extension"
	at := data // where errors point: the extension body
	var err error
	switch typ {
	case extServerName:
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || list.Empty() {
			return p.fail(at, what)
		}
		for !list.Empty() {
			var nameType uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) || name.Empty() {
				return p.fail(at, what)
			}
			if nameType == 0 && ch.SNI == "" {
				ch.SNI = string(name)
			}
		}
	case extALPN:
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || list.Empty() {
			return p.fail(at, what)
		}
		for !list.Empty() {
			var proto cryptobyte.String
			if !list.ReadUint8LengthPrefixed(&proto) {
				return p.fail(at, what)
			}
			raw.ALPN = append(raw.ALPN, string(proto))
		}
	case extSupportedVersions:
		raw.SupportedVersions, err = p.uint16List(&data, 1, what)
	case extSupportedGroups:
		raw.SupportedGroups, err = p.uint16List(&data, 2, what)
	case extSignatureAlgorithms:
		raw.SignatureAlgorithms, err = p.uint16List(&data, 2, what)
	case extECPointFormats:
		var formats cryptobyte.String
		if !data.ReadUint8LengthPrefixed(&formats) {
			return p.fail(at, what)
		}
		raw.ECPointFormats = append([]uint8(nil), formats...)
	case extKeyShare:
		var shares cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&shares) {
			return p.fail(at, what)
		}
		for !shares.Empty() {
			var group uint16
			var key cryptobyte.String
			if !shares.ReadUint16(&group) || !shares.ReadUint16LengthPrefixed(&key) {
				return p.fail(at, what)
			}
			raw.KeyShares = append(raw.KeyShares, group)
		}
	case extSessionTicket:
		// An empty extension only says "I support tickets"; a ticket in it
		// is an offer to resume (RFC 5077 section 3.2).
		if !data.Empty() {
			ch.SessionResumption = true
		}
		return nil
	case extPreSharedKey:
		ch.SessionResumption = true
		return nil
	default:
		return nil
	}
	if err != nil {
		return err
	}
	if !data.Empty() {
		return p.fail(data, what+" (trailing bytes)")
	}
	return nil
}
