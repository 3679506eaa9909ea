package tlsinfo

import (
	"crypto/tls"
	"errors"

	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/timing"
)

// Event is the one mapping from what a Tracker saw to an event's tls
// object: names, numbers, fingerprints and wire times. The chain and its
// verdict are added by the caller (SetChain), which may have to probe for
// it. Event returns nil when no ClientHello was seen.
func (info *Info) Event() *event.TLS {
	ch := info.ClientHello
	if ch == nil {
		return nil
	}
	t := &event.TLS{
		SNI:           ch.SNI,
		ClientHello:   ch,
		ServerHello:   info.ServerHello,
		Resumed:       info.Resumed,
		JA3:           info.JA3,
		JA3Hash:       info.JA3Hash,
		JA4:           info.JA4,
		JA3S:          info.JA3S,
		JA3SHash:      info.JA3SHash,
		ClientHelloMS: timing.MSPtr(info.ClientHelloAt),
		ServerHelloMS: timing.MSPtr(info.ServerHelloAt),
		HandshakeDone: timing.MSPtr(info.HandshakeDoneAt),
		AppDataUpMS:   timing.MSPtr(info.AppDataUpAt),
		AppDataDownMS: timing.MSPtr(info.AppDataDownAt),
		Alert:         joinAlerts(info.ClientAlert, info.ServerAlert),
	}
	if info.HandshakeDoneAt >= 0 && info.ClientHelloAt >= 0 {
		t.HandshakeMS = timing.MSPtr(info.HandshakeDoneAt - info.ClientHelloAt)
	}
	if info.Err != nil {
		t.ParseError = info.Err.Error()
	}
	if r := info.Retry; r != nil {
		t.HelloRetry = &event.HelloRetry{
			Group:               GroupName(r.Group),
			GroupCode:           r.Group,
			Cookie:              r.Cookie,
			AtMS:                timing.MSPtr(r.At),
			SecondClientHelloMS: timing.MSPtr(r.SecondClientHelloAt),
			KeyShares:           names(r.KeyShares, GroupName),
			Changed:             r.Changed,
		}
	}
	if f := info.Failure; f != nil {
		t.Failure = &event.HandshakeFailure{By: f.By, How: f.How, Alert: f.Alert, AlertCode: alertCode(f.AlertCode), Phase: f.Phase, AtMS: timing.MSPtr(f.At)}
	}
	if r := info.Rejection; r != nil {
		cr := &event.ClientRejected{Signal: r.Signal, Alert: r.Alert, AlertCode: alertCode(r.AlertCode)}
		if r.FlightAt >= 0 {
			cr.AfterMS = timing.MSPtr(r.At - r.FlightAt)
		}
		cr.Likely = likely(cr.AlertCode, nil, "")
		t.ClientRejected = cr
	}
	if sh := info.ServerHello; sh != nil {
		setNegotiated(t, info.Version, info.CipherSuite)
		t.ALPN = sh.ALPN
		t.KeyExchangeGroup = sh.KeyExchangeGroup
		if t.KeyExchangeGroup == "" {
			t.KeyExchangeGroup = info.ServerKeyExchangeGroup
		}
		if info.OCSPStapled {
			t.OCSPStapled = ptr(true)
		}
	}
	return t
}

// StateEvent maps a handshake the proxy made or terminated itself (an
// upstream leg, or the client leg of a decrypted connection) to an event's
// tls object, chain included, without its verdict (SetVerdict).
func StateEvent(st tls.ConnectionState) *event.TLS {
	t := &event.TLS{
		SNI:         st.ServerName,
		ALPN:        st.NegotiatedProtocol,
		Resumed:     st.DidResume,
		OCSPStapled: ptr(len(st.OCSPResponse) > 0),
		SCTs:        ptr(len(st.SignedCertificateTimestamps)),
	}
	setNegotiated(t, st.Version, st.CipherSuite)
	if g := st.CurveID; g != 0 {
		t.KeyExchangeGroup = GroupName(uint16(g))
	}
	if len(st.PeerCertificates) > 0 {
		t.Chain = SummarizeChain(st.PeerCertificates)
	}
	return t
}

func setNegotiated(t *event.TLS, version, cipher uint16) {
	if version != 0 {
		t.Version, t.VersionCode = VersionName(version), version
	}
	if cipher != 0 {
		t.Cipher, t.CipherCode = CipherSuiteName(cipher), cipher
	}
}

// SetVerdict records a chain's verification result (from Verify): whether
// it verified, why not, the stable kind of the failure, and with it what a
// client rejection most likely means.
func SetVerdict(t *event.TLS, err error) {
	t.Verified = ptr(err == nil)
	t.VerifyError, t.VerifyErrorKind = "", ""
	if err != nil {
		t.VerifyError = err.Error()
		var ve *VerifyError
		if errors.As(err, &ve) {
			t.VerifyErrorKind = ve.Kind
		} else {
			t.VerifyErrorKind = VerifyOther
		}
	}
	if cr := t.ClientRejected; cr != nil {
		cr.Likely = likely(cr.AlertCode, t.Verified, t.VerifyErrorKind)
	}
}

// likely reads a rejection: the proxy's own verdict on the chain first
// (a chain it trusts that the client refused points at pinning), the
// client's alert when there is no verdict.
func likely(alert *int, verified *bool, kind string) string {
	switch {
	case verified != nil && *verified:
		return LikelyPinning
	case kind == VerifyUnknownAuthority || kind == VerifySelfSigned:
		return LikelyUntrustedCA
	case verified != nil:
		return LikelyInvalidCertificate
	case alert != nil && *alert == alertUnknownCA:
		return LikelyUntrustedCA
	}
	return LikelyUnknown
}

func alertCode(code int) *int {
	if code < 0 {
		return nil
	}
	return &code
}

func joinAlerts(client, server string) string {
	switch {
	case client != "" && server != "":
		return "client: " + client + "; server: " + server
	case client != "":
		return "client: " + client
	case server != "":
		return "server: " + server
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
