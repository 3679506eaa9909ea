// Package event defines the per-connection record inspectproxy writes, one
// JSON object per line. The struct is the schema: field names here are the
// contract the reports, the ATS audit and users' own tools read.
package event

import "time"

// Kinds of event.
const (
	KindTunnel = "tunnel" // a TCP stream (CONNECT, SOCKS5, WireGuard), passed through undecrypted
	KindMITM   = "mitm"   // a TCP stream decrypted with the proxy's CA
	KindHTTP   = "http"   // plain HTTP proxy requests
	KindDNS    = "dns"    // one DNS lookup a WireGuard peer made
	KindUDP    = "udp"    // one UDP flow of a WireGuard peer (QUIC included)
	// KindGap is not a connection: the events file says that Dropped
	// events were lost between Start and End, and Error says why.
	KindGap = "gap"
)

// Sources: what brought a client stream to the proxy.
const (
	SourceHTTP      = "http"      // the HTTP proxy listener (CONNECT or absolute-form requests)
	SourceSOCKS5    = "socks5"    // SOCKS5 CONNECT
	SourceWireGuard = "wireguard" // a flow from a WireGuard peer's tunnel
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
	// Source is what brought the stream: http, socks5 or wireguard.
	Source string `json:"source,omitempty"`
	// Peer is the WireGuard peer's name (source wireguard).
	Peer string `json:"peer,omitempty"`
	// SNIMismatch is true when the ClientHello named another host than the
	// CONNECT target: the proxy connected to the target's address and, when
	// decrypting, verified the server for the SNI and issued its leaf for it.
	SNIMismatch bool `json:"sni_mismatch,omitempty"`
	// MITMSkipped says why a stream the MITM policy selects was passed
	// through instead (e.g. the client rejected the proxy's certificate
	// earlier and mitm.auto_passthrough is on).
	MITMSkipped string `json:"mitm_skipped,omitempty"`
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
	// ATSAbsent says why there is no ATS verdict, e.g. the connection
	// never reached a server.
	ATSAbsent string `json:"ats_absent,omitempty"`
	// DNS is the lookup of a kind "dns" event.
	DNS *DNS `json:"dns,omitempty"`
	// UDP is the flow of a kind "udp" event.
	UDP *UDP `json:"udp,omitempty"`
	// Limit is the config key of the bound that ended the connection or
	// refused part of it, if any: limits.max_connections,
	// limits.header_timeout, wireguard.max_connections_per_peer, ...
	Limit string `json:"limit,omitempty"`
	// Truncated is true when a per-connection bound cut this record; Cut
	// says what was left out.
	Truncated bool `json:"truncated,omitempty"`
	Cut       *Cut `json:"cut,omitempty"`
	// Dropped is, in a kind "gap" record, how many events were lost.
	Dropped int64 `json:"dropped,omitempty"`
	// Error is the first thing that went wrong, with evidence.
	Error string `json:"error,omitempty"`
}

// Cut counts what the per-connection bounds left out of an event.
type Cut struct {
	// HTTP is the requests past limits.max_recorded_requests: served and
	// counted, not described.
	HTTP int `json:"http,omitempty"`
	// URLs is how many URLs were shortened to limits.max_url_bytes (each
	// keeps its full length in http[].url_length).
	URLs int `json:"urls,omitempty"`
	// Headers is how many header fields were dropped.
	Headers int `json:"headers,omitempty"`
}

// TCP times one upstream TCP connection and how it ended.
type TCP struct {
	DNSMS     *float64 `json:"dns_ms"`     // null when the target was an IP literal
	ConnectMS *float64 `json:"connect_ms"` // three-way handshake only
	// DialAtMS is when the proxy began to dial (DNS, then connect).
	DialAtMS *float64 `json:"dial_at_ms,omitempty"`
	// ConnectAt is when the connection was up; absent if it never was.
	ConnectAt  float64 `json:"connect_at_ms,omitempty"`
	RemoteAddr string  `json:"remote_addr,omitempty"`
	// FirstFIN is who half-closed first: "client", "server" (or "proxy").
	FirstFIN    string   `json:"first_fin,omitempty"`
	ClientFINMS *float64 `json:"client_fin_ms,omitempty"`
	ServerFINMS *float64 `json:"server_fin_ms,omitempty"`
	// HalfCloseMS is the time between the two FINs.
	HalfCloseMS *float64 `json:"half_close_ms,omitempty"`
	// RST is who reset the connection, if anyone: client, server, or
	// proxy (a limit or shutdown cut it). RSTCause says why when known:
	// data_after_close, abort, proxy_idle_timeout, ...
	RST      string `json:"rst,omitempty"`
	RSTCause string `json:"rst_cause,omitempty"`
	// RSTMS is when the reset was seen.
	RSTMS     *float64 `json:"rst_ms,omitempty"`
	BytesUp   int64    `json:"bytes_up"`
	BytesDown int64    `json:"bytes_down"`
	// DurationMS is how long the connection lived: for the tcp of a
	// tunnel, from the client's accept until both sides were closed; for
	// an upstream of an http or mitm connection, from its dial to its close.
	DurationMS float64 `json:"duration_ms"`
	// Timeout names the proxy timeout that ended the connection, if any.
	Timeout string `json:"timeout,omitempty"`
	// History is what the proxy saw, in order, in Zeek conn.log letters:
	// uppercase for the client side, lowercase for the server side.
	History string `json:"history,omitempty"`
	// Attempts lists every connect attempt (Happy Eyeballs), in start order.
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Attempt is one TCP connect attempt to one address.
type Attempt struct {
	Addr    string  `json:"addr"`
	StartMS float64 `json:"start_ms"`
	// MS is how long the attempt took until it connected, failed or was
	// cancelled because another won.
	MS float64 `json:"ms"`
	// Outcome is connected, refused, timeout, unreachable, cancelled,
	// denied or error.
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
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
	// HelloRetry is the server's HelloRetryRequest (TLS 1.3), if it sent one.
	HelloRetry *HelloRetry `json:"hello_retry_request,omitempty"`
	// Failure says why the handshake did not complete, if it did not.
	Failure *HandshakeFailure `json:"handshake_failure,omitempty"`
	// ClientRejected is set when the client refused the server's (or the
	// proxy's) certificate.
	ClientRejected *ClientRejected `json:"client_rejected,omitempty"`
}

// TunnelTTFB is a tunnel's nearest thing to a time to first byte: its
// bytes are opaque, so the first data down after the first data up. A
// server-first protocol sends down first and has none (ok false); so has
// a nil TLS.
func (t *TLS) TunnelTTFB() (ms float64, ok bool) {
	if t == nil || t.AppDataUpMS == nil || t.AppDataDownMS == nil || *t.AppDataDownMS < *t.AppDataUpMS {
		return 0, false
	}
	return *t.AppDataDownMS - *t.AppDataUpMS, true
}

// HelloRetry is a HelloRetryRequest and what the client's second
// ClientHello changed.
type HelloRetry struct {
	// Group is the key-share group the server asked for.
	Group     string   `json:"group,omitempty"`
	GroupCode uint16   `json:"group_code,omitempty"`
	Cookie    bool     `json:"cookie,omitempty"`
	AtMS      *float64 `json:"at_ms"`
	// SecondClientHelloMS is when the client's second ClientHello was complete.
	SecondClientHelloMS *float64 `json:"second_client_hello_ms"`
	// KeyShares are the groups of the second ClientHello's key shares.
	KeyShares []string `json:"key_shares,omitempty"`
	// Changed lists what else differs from the first ClientHello
	// (extension names, "cipher_suites", ...).
	Changed []string `json:"changed,omitempty"`
}

// HandshakeFailure is how a TLS handshake ended before it was done.
type HandshakeFailure struct {
	// By is who ended it: client or server (proxy for a limit).
	By string `json:"by"`
	// How is alert, close, rst or timeout.
	How string `json:"how"`
	// Alert is the alert sent, e.g. "fatal handshake_failure (40)".
	Alert     string `json:"alert,omitempty"`
	AlertCode *int   `json:"alert_code,omitempty"`
	// Phase is the last handshake step seen: client_hello,
	// hello_retry_request, server_hello, server_flight (certificate and the
	// rest of it), client_finished.
	Phase string   `json:"phase"`
	AtMS  *float64 `json:"at_ms"`
}

// ClientRejected is a client refusing the certificate it was shown.
type ClientRejected struct {
	// Signal is the evidence: alert (a readable certificate alert),
	// encrypted_alert (TLS 1.3: an alert-sized record instead of the
	// client's Finished), close or rst (the client hung up after the
	// server's flight, before its Finished).
	Signal string `json:"signal"`
	// Alert is the client's alert when one was readable (TLS 1.3 encrypts
	// it: then "encrypted alert").
	Alert     string `json:"alert,omitempty"`
	AlertCode *int   `json:"alert_code,omitempty"`
	// AfterMS is the time from the server's flight to the rejection.
	AfterMS *float64 `json:"after_ms"`
	// Likely is pinning (the chain verifies against the proxy's roots, yet
	// the client refused it), untrusted_ca (the chain's CA is unknown, or
	// the client said unknown_ca), invalid_certificate (expired, wrong
	// name, ...) or unknown (no verdict and an alert that does not say).
	Likely string `json:"likely"`
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
	// URLLength is the URL's full length when URL was shortened.
	URLLength int `json:"url_length,omitempty"`
	// Headers, decrypted or plain, with secrets redacted unless
	// mitm.record_secrets is on; sizes are the bytes on the wire (HTTP/1)
	// or of the decoded fields (HTTP/2).
	RequestHeaders      []Header `json:"request_headers,omitempty"`
	ResponseHeaders     []Header `json:"response_headers,omitempty"`
	RequestHeadersSize  int64    `json:"request_headers_size,omitempty"`
	ResponseHeadersSize int64    `json:"response_headers_size,omitempty"`
	RequestBodySize     int64    `json:"request_body_size,omitempty"`
}

// Header is one header field.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// DNS is one lookup a WireGuard peer sent to the proxy's tunnel resolver.
type DNS struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	TypeCode uint16 `json:"type_code"`
	// RCode is the response code name (NOERROR, NXDOMAIN, SERVFAIL, ...).
	RCode     string   `json:"rcode"`
	RCodeCode int      `json:"rcode_code"`
	Answers   []string `json:"answers,omitempty"`
	// MS is the host's resolve time.
	MS float64 `json:"ms"`
}

// UDP is one UDP flow (one peer address and port to one destination).
type UDP struct {
	Remote      string  `json:"remote"`
	BytesUp     int64   `json:"bytes_up"`
	BytesDown   int64   `json:"bytes_down"`
	PacketsUp   int64   `json:"packets_up"`
	PacketsDown int64   `json:"packets_down"`
	DurationMS  float64 `json:"duration_ms"`
	// Verdict is forwarded or refused (QUIC is refused by default so that
	// clients fall back to TCP).
	Verdict string `json:"verdict"`
	// QUIC is what the QUIC Initial showed, when the flow was QUIC.
	QUIC *QUIC `json:"quic,omitempty"`
}

// QUIC is read from a QUIC Initial packet (RFC 9001 §5.2).
type QUIC struct {
	Version string   `json:"version"`
	SNI     string   `json:"sni,omitempty"`
	ALPN    []string `json:"alpn,omitempty"`
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
