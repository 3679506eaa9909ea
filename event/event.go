// Package event defines the per-connection record inspectproxy writes, one
// JSON object per line. The struct is the schema: field names here are the
// contract the reports, the ATS audit and users' own tools read.
package event

import "time"

// Kinds of client connection.
const (
	KindTunnel = "tunnel" // CONNECT, passed through undecrypted
	KindMITM   = "mitm"   // CONNECT, decrypted with the proxy's CA
	KindHTTP   = "http"   // plain HTTP proxy requests
)

// Sides of a connection, for who closed first and who reset.
const (
	SideClient = "client"
	SideServer = "server"
	SideProxy  = "proxy"
)

// Chain sources.
const (
	ChainObserved = "observed" // read from the handshake on the wire (TLS <= 1.2)
	ChainProbed   = "probed"   // fetched by a side handshake (TLS 1.3 hides it)
	ChainMITM     = "mitm"     // the proxy's own upstream handshake
)

// Event is one client connection, written when it closes.
// Times ending in _ms are milliseconds relative to the moment the proxy
// accepted the client connection.
type Event struct {
	ID     string    `json:"id"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Client string    `json:"client"`
	// Target is host:port as the client asked for it.
	Target string `json:"target"`
	Kind   string `json:"kind"`
	// TCP is the upstream connection of a tunnel, or the first upstream
	// connection of an http connection (all of them are in Upstreams).
	TCP *TCP `json:"tcp"`
	// TLS is null when no TLS was seen; TLSAbsent then says why.
	TLS       *TLS   `json:"tls"`
	TLSAbsent string `json:"tls_absent,omitempty"`
	// Upstreams lists every upstream connection an http or mitm client
	// connection used, in dial order.
	Upstreams []Upstream `json:"upstreams,omitempty"`
	HTTP      []HTTP     `json:"http,omitempty"`
	ATS       *ATS       `json:"ats,omitempty"`
	// Error is the first thing that went wrong, with evidence.
	Error string `json:"error,omitempty"`
}

// TCP times one upstream TCP connection and how it ended.
type TCP struct {
	DNSMS     *float64 `json:"dns_ms"`     // null when the target was an IP literal
	ConnectMS *float64 `json:"connect_ms"` // three-way handshake only
	// ConnectAt is when the connection was up; absent if it never was.
	ConnectAt  float64 `json:"connect_at_ms,omitempty"`
	RemoteAddr string  `json:"remote_addr,omitempty"`
	// FirstFIN is who half-closed first: "client", "server" (or "proxy").
	FirstFIN    string   `json:"first_fin,omitempty"`
	ClientFINMS *float64 `json:"client_fin_ms,omitempty"`
	ServerFINMS *float64 `json:"server_fin_ms,omitempty"`
	// HalfCloseMS is the time between the two FINs.
	HalfCloseMS *float64 `json:"half_close_ms,omitempty"`
	// RST is who reset the connection, if anyone.
	RST        string  `json:"rst,omitempty"`
	BytesUp    int64   `json:"bytes_up"`
	BytesDown  int64   `json:"bytes_down"`
	DurationMS float64 `json:"duration_ms"`
	// Timeout names the proxy timeout that ended the connection, if any.
	Timeout string `json:"timeout,omitempty"`
}

// TLS is the handshake as seen (tunnel) or made (mitm).
type TLS struct {
	SNI     string `json:"sni,omitempty"`
	Version string `json:"version,omitempty"`
	// VersionCode and CipherCode are the numbers behind Version and Cipher
	// (e.g. 771 and 4865), for policy code: names are for people.
	VersionCode      uint16       `json:"version_code,omitempty"`
	Cipher           string       `json:"cipher,omitempty"`
	CipherCode       uint16       `json:"cipher_code,omitempty"`
	ALPN             string       `json:"alpn,omitempty"`
	KeyExchangeGroup string       `json:"key_exchange_group,omitempty"`
	Resumed          bool         `json:"resumed,omitempty"`
	ClientHello      *ClientHello `json:"client_hello,omitempty"`
	ServerHello      *ServerHello `json:"server_hello,omitempty"`
	JA3              string       `json:"ja3,omitempty"`
	JA3Hash          string       `json:"ja3_hash,omitempty"`
	JA4              string       `json:"ja4,omitempty"`
	JA3S             string       `json:"ja3s,omitempty"`
	JA3SHash         string       `json:"ja3s_hash,omitempty"`
	ClientHelloMS    *float64     `json:"client_hello_ms"`
	ServerHelloMS    *float64     `json:"server_hello_ms"`
	// HandshakeMS is the handshake's duration, ClientHello to done.
	HandshakeMS   *float64 `json:"handshake_ms"`
	HandshakeDone *float64 `json:"handshake_done_ms"`
	AppDataUpMS   *float64 `json:"first_app_data_up_ms,omitempty"`
	AppDataDownMS *float64 `json:"first_app_data_down_ms,omitempty"`
	Alert         string   `json:"alert,omitempty"`
	Chain         []Cert   `json:"chain,omitempty"`
	ChainSource   string   `json:"chain_source,omitempty"`
	// ChainError says why no chain is given (e.g. the probe failed).
	ChainError string `json:"chain_error,omitempty"`
	// Verified is null when there was no chain to verify.
	Verified    *bool  `json:"verified"`
	VerifyError string `json:"verify_error,omitempty"`
	// VerifyErrorKind is a stable word: expired, not_yet_valid, self_signed,
	// unknown_authority, hostname_mismatch, incompatible_usage, other.
	VerifyErrorKind string `json:"verify_error_kind,omitempty"`
	OCSPStapled     *bool  `json:"ocsp_stapled,omitempty"`
	SCTs            *int   `json:"scts,omitempty"`
	// ParseError says why inspection stopped early; the bytes still flowed.
	ParseError string `json:"parse_error,omitempty"`
}

// Upstream is one upstream connection of an http or mitm client connection.
type Upstream struct {
	ID     int    `json:"id"`
	Target string `json:"target"`
	TCP    TCP    `json:"tcp"`
	TLS    *TLS   `json:"tls,omitempty"`
	Error  string `json:"error,omitempty"`
}

// HTTP is one request, timed like HAR: send, wait (to first byte), receive.
type HTTP struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	Proto  string `json:"proto,omitempty"`
	Status int    `json:"status"`
	// UpstreamID links to Upstreams[].ID; Reused says the connection was
	// already open when the request started.
	UpstreamID int      `json:"upstream_id"`
	Reused     bool     `json:"reused"`
	StartMS    float64  `json:"start_ms"`
	BlockedMS  *float64 `json:"blocked_ms,omitempty"` // waiting for a connection
	SendMS     float64  `json:"send_ms"`
	WaitMS     *float64 `json:"wait_ms"`
	ReceiveMS  *float64 `json:"receive_ms"`
	Bytes      int64    `json:"bytes"`
	Error      string   `json:"error,omitempty"`
}

// ATS is the App Transport Security verdict for a connection.
type ATS struct {
	// Compliant is "yes", "no" or "unknown" (a fact needed was not seen).
	Compliant  string      `json:"compliant"`
	Policy     string      `json:"policy"`
	Violations []Violation `json:"violations,omitempty"`
	Unknown    []Violation `json:"unknown,omitempty"`
	// App is the verdict under the app's own Info.plist, when one is given.
	App *AppVerdict `json:"app,omitempty"`
}

// Violation is one broken ATS rule.
type Violation struct {
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
}

// AppVerdict says whether an app's NSAppTransportSecurity allows the
// connection and, if a key relaxed a rule, which.
type AppVerdict struct {
	Allowed    bool        `json:"allowed"`
	Domain     string      `json:"domain,omitempty"` // the NSExceptionDomains entry that matched
	Key        string      `json:"key,omitempty"`    // the key that allowed it
	Reason     string      `json:"reason,omitempty"`
	Violations []Violation `json:"violations,omitempty"`
	// Unknown lists facts not seen; Allowed is then false, not established.
	Unknown []Violation `json:"unknown,omitempty"`
}
