package ats

import (
	"crypto/tls"
	"slices"
	"strings"

	"github.com/inspectproxy/inspectproxy/tlsinfo"
)

// cipherClass says which ATS configurations allow a cipher suite.
type cipherClass int

const (
	cipherFS   cipherClass = iota // every ATS configuration
	cipherRSA                     // only with forward secrecy not required
	cipherNone                    // no ATS configuration
)

// Suite lists from Apple's Security code (SecProtocolInternal.h), by IANA
// number; the constants crypto/tls lacks are written as numbers.
var (
	// fsSuites is what ATS allows by default, in ATS's order.
	fsSuites = []uint16{
		tls.TLS_AES_128_GCM_SHA256,
		tls.TLS_AES_256_GCM_SHA384,
		tls.TLS_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	}
	// rsaSuites is what NSExceptionRequiresForwardSecrecy=NO adds.
	rsaSuites = []uint16{
		tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	}
	// Apple's documentation still lists these SHA-2 CBC suites; the code
	// dropped them in 2022. An older client may negotiate them, so they are
	// accepted, but the probe does not offer them.
	legacyFSSuites = []uint16{
		0xc024, // TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		0xc028, // TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	}
	legacyRSASuites = []uint16{
		0x003d, // TLS_RSA_WITH_AES_256_CBC_SHA256
		tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
	}
)

var cipherClasses = func() map[uint16]cipherClass {
	m := map[uint16]cipherClass{}
	for _, s := range slices.Concat(fsSuites, legacyFSSuites) {
		m[s] = cipherFS
	}
	for _, s := range slices.Concat(rsaSuites, legacyRSASuites) {
		m[s] = cipherRSA
	}
	return m
}()

// weakParts explains, first match wins, why a suite is in no ATS list.
var weakParts = []struct{ part, why string }{
	{"NULL", "no encryption (NULL)"},
	{"EXPORT", "export-grade"},
	{"anon", "anonymous key exchange, the server is not authenticated"},
	{"RC4", "RC4 is broken"},
	{"3DES", "3DES is allowed by no ATS configuration"},
	{"_DES", "DES is allowed by no ATS configuration"},
	{"PSK", "pre-shared-key suites are not in the ATS lists"},
	{"SRP", "SRP suites are not in the ATS lists"},
	{"CCM", "AES-CCM is not in the ATS lists"},
	{"TLS_DHE_", "finite-field DHE is not in the ATS lists"},
	{"TLS_DH_", "static DH key exchange is not in the ATS lists"},
	{"TLS_ECDH_", "static ECDH key exchange is not in the ATS lists"},
	{"CAMELLIA", "CBC without AES (Camellia)"},
	{"ARIA", "CBC without AES (ARIA)"},
	{"SEED", "CBC without AES (SEED)"},
	{"IDEA", "CBC without AES (IDEA)"},
}

// classifyCipher places a suite by its number; for cipherNone, why says
// what is wrong with it, read from its IANA name (the name only explains).
func classifyCipher(id uint16) (class cipherClass, why string) {
	if c, ok := cipherClasses[id]; ok {
		return c, ""
	}
	name := tlsinfo.CipherSuiteName(id)
	if strings.HasPrefix(name, "0x") {
		return cipherNone, "unknown cipher suite, in no ATS list"
	}
	for _, w := range weakParts {
		if strings.Contains(name, w.part) {
			return cipherNone, w.why
		}
	}
	return cipherNone, "in no ATS cipher list"
}
