package tlsinfo

import (
	"golang.org/x/crypto/cryptobyte"

	"github.com/inspectproxy/inspectproxy/event"
)

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

// ParseClientHello parses a complete ClientHello handshake message, header
// included (RFC 8446 section 4.1.2; the extensions block is optional before
// TLS 1.3). It validates the framing of every field and of the extensions
// it reads; unknown extensions are kept by code point only.
func ParseClientHello(msg []byte) (*event.ClientHello, error) {
	p := msgParser{name: "client_hello", msg: msg}
	body, err := p.body(typeClientHello)
	if err != nil {
		return nil, err
	}
	ch := &event.ClientHello{Size: len(body)}
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
		if err := parseClientHelloExtension(ch, &p, typ, data); err != nil {
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

func parseClientHelloExtension(ch *event.ClientHello, p *msgParser, typ uint16, data cryptobyte.String) error {
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
