package ats

import (
	"slices"
	"strings"
)

// cipherClass says which ATS configurations allow a cipher suite.
type cipherClass int

const (
	cipherFS   cipherClass = iota // every ATS configuration
	cipherRSA                     // only with forward secrecy not required
	cipherNone                    // no ATS configuration
)

// Suite lists from Apple's Security code (SecProtocolInternal.h); IANA names.
var (
	// fsSuites is what ATS allows by default, in ATS's order.
	fsSuites = []string{
		"TLS_AES_128_GCM_SHA256",
		"TLS_AES_256_GCM_SHA384",
		"TLS_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
		"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
		"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
		"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
		"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
		"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	}
	// rsaSuites is what NSExceptionRequiresForwardSecrecy=NO adds.
	rsaSuites = []string{
		"TLS_RSA_WITH_AES_256_GCM_SHA384",
		"TLS_RSA_WITH_AES_128_GCM_SHA256",
		"TLS_RSA_WITH_AES_256_CBC_SHA",
		"TLS_RSA_WITH_AES_128_CBC_SHA",
	}
	// Apple's documentation still lists these SHA-2 CBC suites; the code
	// dropped them in 2022. An older client may negotiate them, so they are
	// accepted, but the probe does not offer them.
	legacyFSSuites = []string{
		"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
		"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
		"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
		"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	}
	legacyRSASuites = []string{
		"TLS_RSA_WITH_AES_256_CBC_SHA256",
		"TLS_RSA_WITH_AES_128_CBC_SHA256",
	}
)

var cipherClasses = func() map[string]cipherClass {
	m := map[string]cipherClass{}
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

// classifyCipher places an IANA suite name; for cipherNone, why says what
// is wrong with it.
func classifyCipher(name string) (class cipherClass, why string) {
	if c, ok := cipherClasses[name]; ok {
		return c, ""
	}
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
