package tlsinfo

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"

	"github.com/inspectproxy/inspectproxy/event"
)

// handshakeMsg frames body as a handshake message of type typ.
func handshakeMsg(typ uint8, body func(b *cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typ)
	b.AddUint24LengthPrefixed(body)
	return b.BytesOrPanic()
}

// serverHello builds a ServerHello with the given random and extensions.
func serverHello(random []byte, suite uint16, exts func(b *cryptobyte.Builder)) []byte {
	return handshakeMsg(typeServerHello, func(b *cryptobyte.Builder) {
		b.AddUint16(VersionTLS12)
		b.AddBytes(random)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		b.AddUint16(suite)
		b.AddUint8(0)
		if exts != nil {
			b.AddUint16LengthPrefixed(exts)
		}
	})
}

func ext(b *cryptobyte.Builder, typ uint16, data func(b *cryptobyte.Builder)) {
	b.AddUint16(typ)
	b.AddUint16LengthPrefixed(data)
}

// TestParseClientHelloTruncated cuts a real ClientHello body at every
// length (fixing up the header) and wants a clean error or a clean parse,
// never a panic.
func TestParseClientHelloTruncated(t *testing.T) {
	for _, file := range []string{"ja3rs-chrome-grease.hex", "smithproxy-ja4-1.hex", "ja3java-openssl-ssl3.hex"} {
		msg := readHex(t, filepath.Join("clienthello", file))
		body := msg[4:]
		for k := range len(body) {
			cut := append([]byte{typeClientHello, byte(k >> 16), byte(k >> 8), byte(k)}, body[:k]...)
			if _, err := ParseClientHello(cut); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s cut at %d: %v is not ErrMalformed", file, k, err)
			}
		}
		if _, err := ParseClientHello(msg[:len(msg)-1]); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: header longer than the message accepted: %v", file, err)
		}
	}
}

func TestParseClientHelloErrors(t *testing.T) {
	hello := func(sessionID int, suites []byte, compression []byte, exts func(b *cryptobyte.Builder), trailing []byte) []byte {
		return handshakeMsg(typeClientHello, func(b *cryptobyte.Builder) {
			b.AddUint16(VersionTLS12)
			b.AddBytes(make([]byte, 32))
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, sessionID)) })
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(suites) })
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(compression) })
			if exts != nil {
				b.AddUint16LengthPrefixed(exts)
			}
			b.AddBytes(trailing)
		})
	}
	suites := []byte{0x13, 0x01}
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"wrong type", handshakeMsg(2, func(b *cryptobyte.Builder) {}), "got server_hello, want client_hello"},
		{"long session id", hello(33, suites, []byte{0}, nil, nil), "bad legacy_session_id at byte 38"},
		{"odd cipher list", hello(0, []byte{0x13}, []byte{0}, nil, nil), "bad cipher_suites at byte 39"},
		{"no compression", hello(0, suites, nil, nil, nil), "bad legacy_compression_methods at byte 43"},
		{"trailing bytes", hello(0, suites, []byte{0}, func(b *cryptobyte.Builder) {}, []byte{1}), "bad trailing bytes after extensions at byte 47"},
		{"extension overruns", hello(0, suites, []byte{0}, func(b *cryptobyte.Builder) { b.AddBytes([]byte{0, 0, 0, 9, 1}) }, nil), "bad extension header at byte 47"},
		{"empty server_name list", hello(0, suites, []byte{0}, func(b *cryptobyte.Builder) {
			ext(b, extServerName, func(b *cryptobyte.Builder) { b.AddUint16(0) })
		}, nil), "bad server_name extension"},
		{"server_name trailing bytes", hello(0, suites, []byte{0}, func(b *cryptobyte.Builder) {
			ext(b, extServerName, func(b *cryptobyte.Builder) {
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint8(0)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("a.example")) })
				})
				b.AddUint8(7)
			})
		}, nil), "bad server_name extension (trailing bytes)"},
		{"odd supported_groups", hello(0, suites, []byte{0}, func(b *cryptobyte.Builder) {
			ext(b, extSupportedGroups, func(b *cryptobyte.Builder) {
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(29) })
			})
		}, nil), "bad supported_groups extension"},
		{"short key_share", hello(0, suites, []byte{0}, func(b *cryptobyte.Builder) {
			ext(b, extKeyShare, func(b *cryptobyte.Builder) {
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(29) })
			})
		}, nil), "bad key_share extension"},
		{"empty ALPN list", hello(0, suites, []byte{0}, func(b *cryptobyte.Builder) {
			ext(b, extALPN, func(b *cryptobyte.Builder) { b.AddUint16(0) })
		}, nil), "bad application_layer_protocol_negotiation extension"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseClientHello(tt.msg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseServerHello(t *testing.T) {
	random := make([]byte, 32)
	tests := []struct {
		name  string
		msg   []byte
		check func(t *testing.T, sh *event.ServerHello)
		err   string
	}{
		{
			name: "TLS 1.2 without extensions",
			msg:  serverHello(random, 0xc02f, nil),
			check: func(t *testing.T, sh *event.ServerHello) {
				if sh.Version != "TLS 1.2" || sh.CipherSuite != "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" || sh.Extensions != nil {
					t.Errorf("%+v", sh)
				}
			},
		},
		{
			name: "TLS 1.3 with PSK",
			msg: serverHello(random, 0x1301, func(b *cryptobyte.Builder) {
				ext(b, extSupportedVersions, func(b *cryptobyte.Builder) { b.AddUint16(VersionTLS13) })
				ext(b, extKeyShare, func(b *cryptobyte.Builder) {
					b.AddUint16(29)
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
				})
				ext(b, extPreSharedKey, func(b *cryptobyte.Builder) { b.AddUint16(0) })
			}),
			check: func(t *testing.T, sh *event.ServerHello) {
				if sh.Version != "TLS 1.3" || sh.LegacyVersion != "TLS 1.2" || sh.KeyExchangeGroup != "x25519" || !sh.Raw.PreSharedKey || sh.HelloRetryRequest {
					t.Errorf("%+v", sh)
				}
			},
		},
		{
			name: "HelloRetryRequest",
			msg: serverHello(helloRetryRequestRandom, 0x1301, func(b *cryptobyte.Builder) {
				ext(b, extSupportedVersions, func(b *cryptobyte.Builder) { b.AddUint16(VersionTLS13) })
				ext(b, extKeyShare, func(b *cryptobyte.Builder) { b.AddUint16(23) })
			}),
			check: func(t *testing.T, sh *event.ServerHello) {
				if !sh.HelloRetryRequest || sh.KeyExchangeGroup != "secp256r1" {
					t.Errorf("%+v", sh)
				}
			},
		},
		{
			name: "ALPN",
			msg: serverHello(random, 0xc02f, func(b *cryptobyte.Builder) {
				ext(b, extALPN, func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("h2")) })
					})
				})
			}),
			check: func(t *testing.T, sh *event.ServerHello) {
				if sh.ALPN != "h2" || sh.Extensions[0] != "application_layer_protocol_negotiation" {
					t.Errorf("%+v", sh)
				}
			},
		},
		{
			name: "two ALPN protocols",
			msg: serverHello(random, 0xc02f, func(b *cryptobyte.Builder) {
				ext(b, extALPN, func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("h2")) })
						b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("h3")) })
					})
				})
			}),
			err: "bad application_layer_protocol_negotiation extension",
		},
		{
			name: "key_share without key",
			msg: serverHello(random, 0x1301, func(b *cryptobyte.Builder) {
				ext(b, extKeyShare, func(b *cryptobyte.Builder) { b.AddUint16(29) })
			}),
			err: "bad key_share extension",
		},
		{
			name: "supported_versions trailing bytes",
			msg: serverHello(random, 0x1301, func(b *cryptobyte.Builder) {
				ext(b, extSupportedVersions, func(b *cryptobyte.Builder) { b.AddUint16(VersionTLS13); b.AddUint8(0) })
			}),
			err: "bad supported_versions extension (trailing bytes)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sh, err := ParseServerHello(tt.msg)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrMalformed) {
					t.Errorf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, sh)
		})
	}
	// Every truncation of a full ServerHello fails cleanly.
	full := serverHello(random, 0x1301, func(b *cryptobyte.Builder) {
		ext(b, extSupportedVersions, func(b *cryptobyte.Builder) { b.AddUint16(VersionTLS13) })
	})
	for k := range len(full) - 4 {
		cut := append([]byte{typeServerHello, 0, byte(k >> 8), byte(k)}, full[4:4+k]...)
		if _, err := ParseServerHello(cut); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("cut at %d: %v", k, err)
		}
	}
}

func TestParseServerKeyExchange(t *testing.T) {
	ske := func(body ...byte) []byte {
		return handshakeMsg(typeServerKeyExchange, func(b *cryptobyte.Builder) { b.AddBytes(body) })
	}
	p2048 := append([]byte{0x01, 0x00, 0x80}, make([]byte, 255)...)
	tests := []struct {
		name  string
		msg   []byte
		suite uint16
		want  string
		err   string
	}{
		{"ECDHE x25519", ske(3, 0, 29, 32), 0xc02f, "x25519", ""},
		{"ECDHE explicit prime", ske(1), 0xc02b, "explicit_prime", ""},
		{"ECDHE bad curve type", ske(9), 0xc02b, "", "bad ECCurveType 9"},
		{"DHE 2048", ske(p2048...), 0x009e, "DHE 2048-bit", ""},
		{"ECDHE-PSK with hint", ske(0, 2, 'h', 'i', 3, 0, 23), 0xc035, "secp256r1", ""},
		{"RSA export", ske(0, 1, 0x80), 0x0003, "RSA 8-bit", ""},
		{"plain RSA suite", ske(1, 2, 3), 0x002f, "", ""},
		{"truncated", ske(3, 0), 0xc02f, "", "bad named_curve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseServerKeyExchange(tt.msg, tt.suite)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseCertificateStatus(t *testing.T) {
	status := func(body ...byte) []byte {
		return handshakeMsg(typeCertificateStatus, func(b *cryptobyte.Builder) { b.AddBytes(body) })
	}
	if ok, err := parseCertificateStatus(status(1, 0, 0, 2, 0x30, 0x00)); !ok || err != nil {
		t.Errorf("stapled = %v, %v", ok, err)
	}
	if _, err := parseCertificateStatus(status(2, 0, 0, 0)); err == nil {
		t.Error("status_type 2 accepted")
	}
	if _, err := parseCertificateStatus(status(1, 0, 0, 5, 0)); err == nil {
		t.Error("short OCSPResponse accepted")
	}
}

func TestParseCertificate(t *testing.T) {
	p := newPKI(t)
	chain := [][]byte{p.rsa.Certificate[0], []byte("not a certificate"), p.rsa.Certificate[1]}
	msg := handshakeMsg(typeCertificate, func(b *cryptobyte.Builder) {
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, der := range chain {
				b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(der) })
			}
		})
	})
	certs, certErr, err := parseCertificate(msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(p.rsa.Leaf) {
		t.Errorf("parsed %d certificates", len(certs))
	}
	if certErr == nil || !strings.Contains(certErr.Error(), "certificate 1 of 3 (17 bytes)") {
		t.Errorf("certErr = %v", certErr)
	}
	// The parsed certificates must not alias the message.
	for i := range msg {
		msg[i] = 0
	}
	if !certs[0].Equal(p.rsa.Leaf) {
		t.Error("certificate changed with the input buffer")
	}
	long := handshakeMsg(typeCertificate, func(b *cryptobyte.Builder) {
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			for range maxChainLen + 5 {
				b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.rsa.Certificate[0]) })
			}
		})
	})
	certs, certErr, err = parseCertificate(long)
	if err != nil || len(certs) != maxChainLen || certErr == nil || !strings.Contains(certErr.Error(), "37 certificates, only the first 32 parsed") {
		t.Errorf("%d certificates parsed, certErr %v, err %v", len(certs), certErr, err)
	}
	if _, _, err := parseCertificate(msg[:len(msg)-1]); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated certificate message: %v", err)
	}
}
