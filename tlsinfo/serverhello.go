package tlsinfo

import (
	"bytes"

	"golang.org/x/crypto/cryptobyte"

	"github.com/inspectproxy/inspectproxy/event"
)

// helloRetryRequestRandom is the ServerHello.random that marks a
// HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 8446 section 4.1.3).
var helloRetryRequestRandom = []byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11,
	0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e,
	0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// ParseServerHello parses a complete ServerHello handshake message, header
// included, recognising a HelloRetryRequest by its special random. The
// negotiated version comes from supported_versions when present (TLS 1.3),
// else from legacy_version.
func ParseServerHello(msg []byte) (*event.ServerHello, error) {
	p := msgParser{name: "server_hello", msg: msg}
	body, err := p.body(typeServerHello)
	if err != nil {
		return nil, err
	}
	sh := &event.ServerHello{}
	raw := &sh.Raw
	var random []byte
	var sessionID cryptobyte.String
	var compression uint8
	if !body.ReadUint16(&raw.LegacyVersion) {
		return nil, p.fail(body, "legacy_version")
	}
	if !body.ReadBytes(&random, 32) {
		return nil, p.fail(body, "random")
	}
	at := body
	if !body.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 {
		return nil, p.fail(at, "legacy_session_id")
	}
	if !body.ReadUint16(&raw.CipherSuite) {
		return nil, p.fail(body, "cipher_suite")
	}
	if !body.ReadUint8(&compression) {
		return nil, p.fail(body, "legacy_compression_method")
	}
	sh.HelloRetryRequest = bytes.Equal(random, helloRetryRequestRandom)
	raw.Version = raw.LegacyVersion
	if !body.Empty() {
		exts, err := p.extensions(&body)
		if err != nil {
			return nil, err
		}
		for !exts.Empty() {
			typ, data, err := p.extension(&exts)
			if err != nil {
				return nil, err
			}
			raw.Extensions = append(raw.Extensions, typ)
			sh.Extensions = append(sh.Extensions, ExtensionName(typ))
			if err := parseServerHelloExtension(sh, &p, typ, data); err != nil {
				return nil, err
			}
		}
	}
	sh.LegacyVersion = VersionName(raw.LegacyVersion)
	sh.Version = VersionName(raw.Version)
	sh.CipherSuite = CipherSuiteName(raw.CipherSuite)
	if raw.KeyShareGroup != 0 {
		sh.KeyExchangeGroup = GroupName(raw.KeyShareGroup)
	}
	return sh, nil
}

func parseServerHelloExtension(sh *event.ServerHello, p *msgParser, typ uint16, data cryptobyte.String) error {
	raw := &sh.Raw
	what := ExtensionName(typ) + " extension"
	at := data // where errors point: the extension body
	switch typ {
	case extSupportedVersions:
		if !data.ReadUint16(&raw.Version) {
			return p.fail(at, what)
		}
	case extKeyShare:
		// A HelloRetryRequest names only the group it wants; a ServerHello
		// carries the server's share too.
		if !data.ReadUint16(&raw.KeyShareGroup) {
			return p.fail(at, what)
		}
		if !sh.HelloRetryRequest {
			var key cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&key) || key.Empty() {
				return p.fail(at, what)
			}
		}
	case extALPN:
		var list, proto cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !list.ReadUint8LengthPrefixed(&proto) || !list.Empty() {
			return p.fail(at, what)
		}
		sh.ALPN = string(proto)
	case extPreSharedKey:
		var identity uint16
		if !data.ReadUint16(&identity) {
			return p.fail(at, what)
		}
		raw.PreSharedKey = true
	default:
		return nil
	}
	if !data.Empty() {
		return p.fail(data, what+" (trailing bytes)")
	}
	return nil
}
