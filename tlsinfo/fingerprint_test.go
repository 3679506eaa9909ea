package tlsinfo

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/golden"
)

// TestPublishedFingerprints parses real ClientHello bytes that were
// published together with their fingerprints and checks ours match.
//
// Sources (hex copied into testdata/clienthello/*.hex, each file says where
// from):
//   - ja3rs-*: ClientHellos from jabedude/ja3-rs test pcaps with the JA3
//     string and MD5 asserted in aws/s2n-tls
//     tests/unit/s2n_fingerprint_ja3_test.c ("Known values from Rust
//     implementation").
//   - ja3java-*: ClientHellos from lafaspot/ja3_4java test resources with
//     the JA3 strings asserted in the same s2n-tls test.
//   - smithproxy-ja4-*: complete ClientHello messages with JA4_r and JA4
//     asserted in astibal/smithproxy's JA4 gtest (TEST(JA4_CH, samples)).
func TestPublishedFingerprints(t *testing.T) {
	tests := []struct {
		file          string
		ja3, ja3Hash  string
		ja4, ja4r     string
		sni, alpnHead string
	}{
		{
			file:    "ja3rs-chrome-grease.hex",
			ja3:     "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53-10,0-23-65281-10-11-35-16-5-13-18-51-45-43-27-21,29-23-24,0",
			ja3Hash: "66918128f1b9b03303d77c6f2eefd128",
			sni:     "googleads.g.doubleclick.net",
		},
		{
			file:    "ja3rs-curl.hex",
			ja3:     "771,4866-4867-4865-49196-49200-159-52393-52392-52394-49195-49199-158-49188-49192-107-49187-49191-103-49162-49172-57-49161-49171-51-157-156-61-60-53-47-255,0-11-10-13172-16-22-23-13-43-45-51-21,29-23-30-25-24,0-1-2",
			ja3Hash: "456523fc94726331a4d5a2e1d40b2cd7",
			sni:     "example.com",
		},
		{
			file:    "ja3rs-firefox.hex",
			ja3:     "771,49195-49199-52393-52392-49196-49200-49162-49161-49171-49172-51-57-47-53-10,0-23-65281-10-11-35-16-5-13-28,29-23-24-25,0",
			ja3Hash: "839bbe3ed07fed922ded5aaf714d6842",
			sni:     "incoming.telemetry.mozilla.org",
		},
		{
			file: "ja3java-openssl-ssl3.hex",
			ja3:  "768,49172-49162-57-56-136-135-49167-49157-53-132-49170-49160-22-19-49165-49155-10-49171-49161-51-50-154-153-69-68-49166-49156-47-150-65-7-49169-49159-49164-49154-5-4-21-18-9-20-17-8-6-3-255,,,",
		},
		{
			file: "ja3java-openssl-tls12.hex",
			ja3: "771,49200-49196-49192-49188-49172-49162-163-159-107-106-57-56-136-135-49202-49198-49194-49190-49167-49157-157-61-53-132-49170-49160-22-19-49165-49155-10-49199-49195-49191-49187-49171-49161-162-158-103-64-51-50-154-153-69-68-49201-49197-49193-" +
				"49189-49166-49156-156-60-47-150-65-7-49169-49159-49164-49154-5-4-21-18-9-20-17-8-6-3-255,11-10-35-13-15,24-23,0-1-2",
		},
		{
			file: "smithproxy-ja4-1.hex",
			ja4:  "t13d1715h2_5b57614c22b0_5c2c66f702b0",
			ja4r: "t13d1715h2_002f,0035,009c,009d,1301,1302,1303,c009,c00a,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0017,001c,0022,0023,002b,002d,0033,fe0d,ff01_0403,0503,0603,0804,0805,0806,0401,0501,0601,0203,0201",
			sni:  "ja4db.com",
		},
		{
			file: "smithproxy-ja4-3.hex",
			ja4:  "t13d311200_e8f1e7e78f70_d339722ba4af",
			ja4r: "t13d311200_002f,0033,0035,0039,003c,003d,0067,006b,009c,009d,009e,009f,00ff,1301,1302,1303,c009,c00a,c013,c014,c023,c024,c027,c028,c02b,c02c,c02f,c030,cca8,cca9,ccaa_000a,000b,000d,0015,0016,0017,0023,002b,002d,0031,0033_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601,0303,0301,0302,0402,0502,0602",
			sni:  "remote.pixiedust.online",
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			ch, err := ParseClientHello(readHex(t, filepath.Join("clienthello", tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			ja3, hash := JA3(&ch.Raw)
			if tt.ja3 != "" && ja3 != tt.ja3 {
				t.Errorf("JA3 = %s\nwant   %s", ja3, tt.ja3)
			}
			if tt.ja3Hash != "" && hash != tt.ja3Hash {
				t.Errorf("JA3 hash = %s, want %s", hash, tt.ja3Hash)
			}
			if tt.ja4r != "" && JA4R(&ch.Raw) != tt.ja4r {
				t.Errorf("JA4_r = %s\nwant    %s", JA4R(&ch.Raw), tt.ja4r)
			}
			if tt.ja4 != "" && JA4(&ch.Raw) != tt.ja4 {
				t.Errorf("JA4 = %s, want %s", JA4(&ch.Raw), tt.ja4)
			}
			if ch.SNI != tt.sni {
				t.Errorf("SNI = %q, want %q", ch.SNI, tt.sni)
			}
		})
	}
}

// TestJA4FromPublishedFields rebuilds ClientHellos from published field
// lists, where no raw bytes were published, and checks the hashing.
func TestJA4FromPublishedFields(t *testing.T) {
	// The worked example of FoxIO-LLC/ja4 technical_details/JA4.md: ciphers,
	// extensions and signature algorithms in wire order (its JA4_ro), a
	// TLS 1.3 supported_versions, SNI and ALPN h2.
	foxio := event.ClientHelloRaw{
		LegacyVersion:       VersionTLS12,
		SupportedVersions:   []uint16{0x0a0a, VersionTLS13, VersionTLS12},
		CipherSuites:        []uint16{0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035},
		Extensions:          []uint16{0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012, 0x002b, 0xff01, 0x000b, 0x000a, 0x0015},
		SignatureAlgorithms: []uint16{0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601},
		ALPN:                []string{"h2", "http/1.1"},
	}
	noSigs := foxio
	noSigs.SignatureAlgorithms = nil
	// browserleaks.com output for Chrome 143 as saved in service0427/v2_cp_app
	// tls.md: JA3 text (GREASE already dropped), JA4_ro lists, JA3 MD5, JA4.
	chrome := event.ClientHelloRaw{
		LegacyVersion:       VersionTLS12,
		SupportedVersions:   []uint16{0x3a3a, VersionTLS13, VersionTLS12},
		CipherSuites:        []uint16{4865, 4866, 4867, 49195, 49199, 49196, 49200, 52393, 52392, 49171, 49172, 156, 157, 47, 53},
		Extensions:          []uint16{45, 51, 16, 65037, 23, 17613, 0, 11, 10, 43, 65281, 35, 18, 5, 13, 27},
		SupportedGroups:     []uint16{4588, 29, 23, 24},
		ECPointFormats:      []uint8{0},
		SignatureAlgorithms: []uint16{0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601},
		ALPN:                []string{"h2", "http/1.1"},
	}
	tests := []struct {
		name      string
		raw       event.ClientHelloRaw
		ja4, raw4 string
		ja3Hash   string
	}{
		{
			name: "FoxIO JA4.md example",
			raw:  foxio,
			ja4:  "t13d1516h2_8daaf6152771_e5627efa2ab1",
			raw4: "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
		},
		{
			name: "FoxIO JA4.md example without signature algorithms",
			raw:  noSigs,
			ja4:  "t13d1516h2_8daaf6152771_6d807ffa2a79",
		},
		{
			name:    "browserleaks Chrome 143",
			raw:     chrome,
			ja4:     "t13d1516h2_8daaf6152771_d8a2da3f94cd",
			ja3Hash: "98487aa16281980e7d1120d399efb6a4",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := JA4(&tt.raw); got != tt.ja4 {
				t.Errorf("JA4 = %s, want %s", got, tt.ja4)
			}
			if got := JA4R(&tt.raw); tt.raw4 != "" && got != tt.raw4 {
				t.Errorf("JA4_r = %s\nwant    %s", got, tt.raw4)
			}
			if _, got := JA3(&tt.raw); tt.ja3Hash != "" && got != tt.ja3Hash {
				t.Errorf("JA3 hash = %s, want %s", got, tt.ja3Hash)
			}
		})
	}
}

// TestJA4Rules covers the corners of ja4_a spelled out in JA4.md.
func TestJA4Rules(t *testing.T) {
	tests := []struct {
		name string
		raw  event.ClientHelloRaw
		want string
	}{
		{"empty hello", event.ClientHelloRaw{LegacyVersion: VersionTLS12}, "t12i000000_000000000000_000000000000"},
		{"SSL 3.0", event.ClientHelloRaw{LegacyVersion: VersionSSL30, CipherSuites: []uint16{0x0a0a}}, "ts3i0000"},
		{"unknown version", event.ClientHelloRaw{LegacyVersion: 0x0305}, "t00i"},
		{"GREASE not counted", event.ClientHelloRaw{LegacyVersion: VersionTLS12, CipherSuites: []uint16{0x1a1a, 0x002f}, Extensions: []uint16{0xfafa, 0x0000}}, "t12d0101"},
		{"99 cap", event.ClientHelloRaw{LegacyVersion: VersionTLS12, CipherSuites: make([]uint16, 150)}, "t12i9900"},
		{"one-char ALPN", event.ClientHelloRaw{LegacyVersion: VersionTLS12, ALPN: []string{"x"}}, "t12i0000xx"},
		{"empty ALPN", event.ClientHelloRaw{LegacyVersion: VersionTLS12, ALPN: []string{""}}, "t12i000000"},
		{"ALPN 0xab", event.ClientHelloRaw{LegacyVersion: VersionTLS12, ALPN: []string{"\xab"}}, "t12i0000ab"},
		{"ALPN 0xab 0xcd", event.ClientHelloRaw{LegacyVersion: VersionTLS12, ALPN: []string{"\xab\xcd"}}, "t12i0000ad"},
		{"ALPN 0x30 0xab", event.ClientHelloRaw{LegacyVersion: VersionTLS12, ALPN: []string{"0\xab"}}, "t12i00003b"},
		{"ALPN 0x30 0x31 0xab 0xcd", event.ClientHelloRaw{LegacyVersion: VersionTLS12, ALPN: []string{"01\xab\xcd"}}, "t12i00003d"},
		{"ALPN 0x30 0xab 0xcd 0x31", event.ClientHelloRaw{LegacyVersion: VersionTLS12, ALPN: []string{"0\xab\xcd1"}}, "t12i000001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := JA4(&tt.raw); !strings.HasPrefix(got, tt.want) {
				t.Errorf("JA4 = %s, want prefix %s", got, tt.want)
			}
		})
	}
}

func TestJA3S(t *testing.T) {
	sh := event.ServerHelloRaw{LegacyVersion: VersionTLS12, CipherSuite: 0xc02f, Extensions: []uint16{0xff01, 0x000b, 0x0023}}
	s, hash := JA3S(&sh)
	if s != "771,49199,65281-11-35" || hash != md5Hex([]byte("771,49199,65281-11-35")) || len(hash) != 32 {
		t.Errorf("JA3S = %s %s", s, hash)
	}
}

// TestClientHelloGolden renders every published ClientHello as the JSON the
// events carry, plus its fingerprints, against golden files.
func TestClientHelloGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "clienthello", "*.hex"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".hex")
		t.Run(name, func(t *testing.T) {
			ch, err := ParseClientHello(readHex(t, filepath.Join("clienthello", name+".hex")))
			if err != nil {
				t.Fatal(err)
			}
			js, err := json.MarshalIndent(ch, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			ja3, hash := JA3(&ch.Raw)
			out := string(js) + "\nja3: " + ja3 + "\nja3_hash: " + hash + "\nja4: " + JA4(&ch.Raw) + "\nja4_r: " + JA4R(&ch.Raw) + "\n"
			golden.Check(t, filepath.Join("clienthello", name+".golden"), []byte(out))
		})
	}
}
