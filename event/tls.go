package event

import "time"

// ClientHello is what a ClientHello says about the client, in wire order.
// Names are IANA names; values without a name are written as "0x1234" and
// GREASE values as "GREASE". The numbers behind the names are in Raw, for
// fingerprints and policy code, and are not serialized.
type ClientHello struct {
	// LegacyVersion is the legacy_version field, e.g. "TLS 1.2".
	LegacyVersion string `json:"legacy_version"`
	// SupportedVersions from the supported_versions extension, wire order.
	SupportedVersions []string `json:"supported_versions,omitempty"`
	CipherSuites      []string `json:"cipher_suites"`
	// Extensions are extension names in wire order.
	Extensions          []string `json:"extensions"`
	SNI                 string   `json:"sni,omitempty"`
	ALPN                []string `json:"alpn,omitempty"`
	SupportedGroups     []string `json:"supported_groups,omitempty"`
	SignatureAlgorithms []string `json:"signature_algorithms,omitempty"`
	ECPointFormats      []string `json:"ec_point_formats,omitempty"`
	// KeyShares are the groups the client sent key shares for (TLS 1.3).
	KeyShares []string `json:"key_shares,omitempty"`
	// SessionResumption is true when the client offered a session ticket or PSK.
	SessionResumption bool `json:"session_resumption,omitempty"`
	// Size is the handshake message length in bytes.
	Size int `json:"size"`

	Raw ClientHelloRaw `json:"-"`
}

// ClientHelloRaw keeps the numeric wire values, GREASE included.
type ClientHelloRaw struct {
	LegacyVersion       uint16
	CipherSuites        []uint16
	Extensions          []uint16
	SupportedVersions   []uint16
	SupportedGroups     []uint16
	SignatureAlgorithms []uint16
	ECPointFormats      []uint8
	ALPN                []string
	// KeyShares are the groups of the key_share extension (TLS 1.3).
	KeyShares []uint16
}

// ServerHello is what the server chose.
type ServerHello struct {
	LegacyVersion string `json:"legacy_version"`
	// Version is the negotiated version (supported_versions for TLS 1.3).
	Version          string   `json:"version"`
	CipherSuite      string   `json:"cipher_suite"`
	Extensions       []string `json:"extensions"`
	ALPN             string   `json:"alpn,omitempty"`
	KeyExchangeGroup string   `json:"key_exchange_group,omitempty"`
	// HelloRetryRequest is true when this was an HRR (TLS 1.3).
	HelloRetryRequest bool `json:"hello_retry_request,omitempty"`

	Raw ServerHelloRaw `json:"-"`
}

// ServerHelloRaw keeps numeric wire values.
type ServerHelloRaw struct {
	LegacyVersion uint16
	Version       uint16
	CipherSuite   uint16
	Extensions    []uint16
	// KeyShareGroup is the key_share group (the requested group in a
	// HelloRetryRequest); 0 when absent.
	KeyShareGroup uint16
	// PreSharedKey is true when the server accepted a PSK (TLS 1.3
	// resumption).
	PreSharedKey bool
}

// Cert summarises one certificate of a chain.
type Cert struct {
	Subject            string    `json:"subject"`
	Issuer             string    `json:"issuer"`
	Serial             string    `json:"serial"`
	DNSNames           []string  `json:"dns_names,omitempty"`
	IPAddresses        []string  `json:"ip_addresses,omitempty"`
	NotBefore          time.Time `json:"not_before"`
	NotAfter           time.Time `json:"not_after"`
	KeyType            string    `json:"key_type"` // "RSA", "ECDSA", "Ed25519", "unknown"
	KeyBits            int       `json:"key_bits"`
	Curve              string    `json:"curve,omitempty"`
	SignatureAlgorithm string    `json:"signature_algorithm"` // x509 name, e.g. "SHA256-RSA"
	SHA256             string    `json:"sha256"`              // hex of the DER
	IsCA               bool      `json:"is_ca"`
	SelfSigned         bool      `json:"self_signed,omitempty"`
	ExtKeyUsage        []string  `json:"ext_key_usage,omitempty"`
	// SCTs is the number of embedded signed certificate timestamps.
	SCTs int `json:"scts,omitempty"`
}
