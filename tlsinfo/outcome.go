package tlsinfo

import (
	"bytes"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/inspectproxy/inspectproxy/event"
)

// Phases of a handshake: the last step seen when it ended early
// (event.HandshakeFailure.Phase).
const (
	PhaseClientHello       = "client_hello"
	PhaseHelloRetryRequest = "hello_retry_request"
	PhaseServerHello       = "server_hello"
	// PhaseServerFlight: the server sent more after its hello (TLS 1.2:
	// Certificate ... ServerHelloDone, or its Finished when resuming; TLS
	// 1.3: encrypted records, which carry the certificate and Finished).
	PhaseServerFlight = "server_flight"
	// PhaseClientFinished: a TLS <= 1.2 client sent ChangeCipherSpec and
	// Finished; the server's Finished is missing.
	PhaseClientFinished = "client_finished"
)

// How a handshake ended early (event.HandshakeFailure.How).
const (
	HowAlert   = "alert"
	HowClose   = "close"
	HowRST     = "rst"
	HowTimeout = "timeout"
)

// Signals of a client rejecting a certificate (event.ClientRejected.Signal).
const (
	// SignalAlert: a plaintext certificate alert (TLS <= 1.2).
	SignalAlert = "alert"
	// SignalEncryptedAlert: TLS 1.3, an alert-sized encrypted record where
	// the client's Finished belongs.
	SignalEncryptedAlert = "encrypted_alert"
	// SignalClose and SignalRST: the client hung up after the server's
	// flight without a word and before its own Finished.
	SignalClose = "close"
	SignalRST   = "rst"
)

// What a rejection most likely means (event.ClientRejected.Likely).
const (
	// LikelyPinning: the chain verifies against the proxy's roots, yet the
	// client refused it: it trusts less than the system does (a pin, or its
	// own CA set).
	LikelyPinning = "pinning"
	// LikelyUntrustedCA: the chain's CA is unknown (to the proxy, or the
	// client said unknown_ca and no verdict was available).
	LikelyUntrustedCA = "untrusted_ca"
	// LikelyInvalidCertificate: the chain has a defect anyone would refuse
	// (expired, wrong name, wrong usage).
	LikelyInvalidCertificate = "invalid_certificate"
	// LikelyUnknown: no verdict and an alert that does not say.
	LikelyUnknown = "unknown"
)

// Alert descriptions (RFC 8446 section 6).
const (
	alertBadCertificate         = 42
	alertUnsupportedCertificate = 43
	alertCertificateRevoked     = 44
	alertCertificateExpired     = 45
	alertCertificateUnknown     = 46
	alertUnknownCA              = 48
)

// extCookie is the HelloRetryRequest cookie extension (RFC 8446 section 4.2.2).
const extCookie uint16 = 44

// Retry is a HelloRetryRequest and the second ClientHello that answered it.
type Retry struct {
	// Group is the key-share group the server asked for.
	Group uint16
	// Cookie is true when the HRR carried a cookie extension.
	Cookie bool
	// At is when the HRR was complete; SecondClientHelloAt when the second
	// ClientHello was (-1 until seen).
	At, SecondClientHelloAt time.Duration
	// KeyShares are the groups of the second ClientHello's key shares.
	KeyShares []uint16
	// Changed names what else the second ClientHello changed (see
	// helloChanges).
	Changed []string
}

// Failure is how a handshake ended before it was done: the first of a
// fatal alert, an alert followed by the sender's close, a close or reset of
// either side (EOF, Reset), or the proxy cutting the connection (Cut).
type Failure struct {
	// By is event.SideClient, SideServer or SideProxy.
	By  string
	How string
	// Alert is the alert as read ("encrypted alert" when it was not
	// readable); AlertCode its description, -1 when not readable or none.
	Alert     string
	AlertCode int
	Phase     string
	At        time.Duration
}

// Rejection is a client refusing the server's certificate before its own
// Finished. Only these signals count, each after the server's flight:
//   - a fatal bad_certificate, unsupported_certificate, certificate_revoked,
//     certificate_expired, certificate_unknown or unknown_ca alert (TLS <=
//     1.2, after the server's Certificate);
//   - TLS 1.3: the client's first encrypted record is too short to be a
//     Finished (alert-sized) and no 0-RTT was offered;
//   - the client closes or resets with neither, while the server is open.
//
// A client that completes its handshake and then hangs up (OkHttp's
// CertificatePinner, curl --pinnedpubkey) looks on the wire like any client
// that ends a connection without a request (openssl s_client </dev/null):
// it is not reported.
type Rejection struct {
	Signal    string
	Alert     string
	AlertCode int // -1 when not readable or none
	// FlightAt is the end of the server's last record before the
	// rejection; At the rejection.
	FlightAt, At time.Duration
}

// handshaking reports whether a started handshake is still undecided.
func (t *Tracker) handshaking() bool {
	return t.info.ClientHello != nil && !t.done && t.info.Failure == nil && !t.stopped()
}

// certShown reports whether the client has seen the server's certificate:
// a TLS <= 1.2 Certificate message, or any TLS 1.3 encrypted server record.
func (t *Tracker) certShown() bool {
	return t.phase == PhaseServerFlight && (t.tls13 || t.certificate)
}

func (t *Tracker) failed(by, how, alert string, code int, at time.Duration) {
	t.info.Failure = &Failure{By: by, How: how, Alert: alert, AlertCode: code, Phase: t.phase, At: at}
}

func (t *Tracker) rejected(signal, alert string, code int, at time.Duration) {
	t.info.Rejection = &Rejection{Signal: signal, Alert: alert, AlertCode: code, FlightAt: t.serverRecordAt, At: at}
}

// plainAlert handles a readable alert: a fatal one ends the handshake, a
// warning only if its sender then hangs up.
func (t *Tracker) plainAlert(d *dirState, level, desc uint8) {
	s := formatAlert(level, desc)
	t.noteAlert(d.dir, s)
	if !t.handshaking() {
		return
	}
	if level != 2 {
		if d.warning == "" {
			d.warning, d.warningCode = s, int(desc)
		}
		return
	}
	t.failed(d.dir.String(), HowAlert, s, int(desc), d.at)
	if d.dir == ClientToServer && t.certShown() && isCertificateAlert(desc) {
		t.rejected(SignalAlert, s, int(desc), d.at)
	}
}

// encryptedAlert handles an alert that cannot be read: a TLS <= 1.2 alert
// after ChangeCipherSpec, or the TLS 1.3 client's alert-sized record.
func (t *Tracker) encryptedAlert(d *dirState) {
	const s = "encrypted alert"
	t.noteAlert(d.dir, s)
	if !t.handshaking() {
		return
	}
	t.failed(d.dir.String(), HowAlert, s, -1, d.at)
	if d.dir == ClientToServer && t.tls13 && t.certShown() {
		t.rejected(SignalEncryptedAlert, s, -1, d.at)
	}
}

// ended handles a direction's close or reset during the handshake.
func (t *Tracker) ended(d *dirState, how string, at time.Duration) {
	if !t.handshaking() {
		return
	}
	switch {
	case d.warning != "":
		t.failed(d.dir.String(), HowAlert, d.warning, d.warningCode, at)
	default:
		t.failed(d.dir.String(), how, "", -1, at)
		if d.dir == ClientToServer && t.certShown() {
			signal := SignalClose
			if how == HowRST {
				signal = SignalRST
			}
			t.rejected(signal, "", -1, at)
		}
	}
}

func isCertificateAlert(desc uint8) bool {
	switch desc {
	case alertBadCertificate, alertUnsupportedCertificate, alertCertificateRevoked,
		alertCertificateExpired, alertCertificateUnknown, alertUnknownCA:
		return true
	}
	return false
}

// helloRetry records a HelloRetryRequest.
func (t *Tracker) helloRetry(sh *event.ServerHello, at time.Duration) {
	t.info.Retry = &Retry{
		Group:               sh.Raw.KeyShareGroup,
		Cookie:              slices.Contains(sh.Raw.Extensions, extCookie),
		At:                  at,
		SecondClientHelloAt: -1,
	}
}

// secondHello records the ClientHello (ch, parsed from msg) that answers
// a HelloRetryRequest.
func (t *Tracker) secondHello(ch *event.ClientHello, msg []byte, at time.Duration) {
	r := t.info.Retry
	r.SecondClientHelloAt = at
	r.KeyShares = ch.Raw.KeyShares
	r.Changed = helloChanges(t.firstHello, msg)
	t.firstHello = nil
}

// helloFields splits a well-formed ClientHello message into its fixed
// fields and extensions (type and body, in wire order).
type helloFields struct {
	fixed [5][]byte // legacy_version, random, legacy_session_id, cipher_suites, compression_methods
	types []uint16
	exts  map[uint16][]byte
}

var helloFieldNames = [5]string{"legacy_version", "random", "legacy_session_id", "cipher_suites", "compression_methods"}

func splitHello(msg []byte) (h helloFields, ok bool) {
	s := cryptobyte.String(msg)
	var body cryptobyte.String
	if !s.Skip(1) || !s.ReadUint24LengthPrefixed(&body) {
		return h, false
	}
	var a, b, c, e cryptobyte.String
	var version, random []byte
	if !body.ReadBytes(&version, 2) || !body.ReadBytes(&random, 32) ||
		!body.ReadUint8LengthPrefixed(&a) || !body.ReadUint16LengthPrefixed(&b) || !body.ReadUint8LengthPrefixed(&c) {
		return h, false
	}
	h.fixed = [5][]byte{version, random, a, b, c}
	h.exts = make(map[uint16][]byte)
	if body.Empty() {
		return h, true
	}
	if !body.ReadUint16LengthPrefixed(&e) {
		return h, false
	}
	for !e.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !e.ReadUint16(&typ) || !e.ReadUint16LengthPrefixed(&data) {
			return h, false
		}
		h.types = append(h.types, typ)
		h.exts[typ] = data
	}
	return h, true
}

// helloChanges lists what a second ClientHello changed from the first,
// apart from key_share (reported on its own): fixed fields by name,
// extensions by name when their body changed, "name (added)" and "name
// (removed)", and "extension_order" when the common ones moved. RFC 8446
// section 4.1.2 allows key_share, early_data (removed), cookie (added),
// pre_shared_key and padding to change.
func helloChanges(first, second []byte) []string {
	a, ok1 := splitHello(first)
	b, ok2 := splitHello(second)
	if !ok1 || !ok2 {
		return nil // both were parsed already; unreachable in practice
	}
	var out []string
	for i := range a.fixed {
		if !bytes.Equal(a.fixed[i], b.fixed[i]) {
			out = append(out, helloFieldNames[i])
		}
	}
	for _, typ := range b.types {
		old, ok := a.exts[typ]
		switch {
		case typ == extKeyShare:
		case !ok:
			out = append(out, ExtensionName(typ)+" (added)")
		case !bytes.Equal(old, b.exts[typ]):
			out = append(out, ExtensionName(typ))
		}
	}
	for _, typ := range a.types {
		if _, ok := b.exts[typ]; !ok {
			out = append(out, ExtensionName(typ)+" (removed)")
		}
	}
	common := func(from []uint16, m map[uint16][]byte) []uint16 {
		var c []uint16
		for _, typ := range from {
			if _, ok := m[typ]; ok {
				c = append(c, typ)
			}
		}
		return c
	}
	if !slices.Equal(common(a.types, b.exts), common(b.types, a.exts)) {
		out = append(out, "extension_order")
	}
	return out
}
