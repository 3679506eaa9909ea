package tlsinfo

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
)

// Direction is one half of a proxied TCP connection.
type Direction int

// The two directions of a connection.
const (
	ClientToServer Direction = iota
	ServerToClient
)

func (d Direction) String() string {
	if d == ClientToServer {
		return "client"
	}
	return "server"
}

// DefaultMaxBuffer is the reassembly limit per direction when NewTracker is
// given none: far above real handshake messages (a certificate chain is a
// few KiB), far below what a hostile peer could make a proxy hold.
const DefaultMaxBuffer = 256 << 10

// minTLS13FinishedRecord is the smallest encrypted record that can carry a
// TLS 1.3 Finished: 4-byte header, 32-byte verify_data, 1 content-type
// byte and the shortest AEAD tag (8 bytes, AES-CCM-8).
const minTLS13FinishedRecord = 4 + 32 + 1 + 8

// Info is what a Tracker has seen so far. Times are durations since the
// client connection was accepted, as passed to Feed; -1 means not seen.
type Info struct {
	// NotTLS, when set, says why the stream is not TLS, with the evidence
	// (the first bytes). A client that closes without sending a byte is
	// reported here too.
	NotTLS string
	// Err says why inspection stopped early: malformed bytes (with their
	// offset), a buffer limit, or a truncated record or message. It never
	// affects forwarding.
	Err error

	ClientHello *event.ClientHello
	// ServerHello is the last ServerHello seen: after a HelloRetryRequest
	// it is replaced by the real one.
	ServerHello *event.ServerHello
	// Retry describes the HelloRetryRequest; nil without one.
	Retry *Retry
	// Failure says how a handshake that started ended before it was done.
	Failure *Failure
	// Rejection is set when the client refused the server's certificate.
	Rejection *Rejection
	// Version and CipherSuite are the negotiated values (0 until known).
	Version     uint16
	CipherSuite uint16

	// Certificates is the chain from the Certificate message, TLS 1.2 and
	// earlier only (TLS 1.3 encrypts it). CertificateErr lists the
	// certificates x509 could not parse.
	Certificates   []*x509.Certificate
	CertificateErr error

	// ServerKeyExchangeGroup is what a TLS 1.2 ServerKeyExchange
	// announced, e.g. "x25519" or "DHE 2048-bit".
	ServerKeyExchangeGroup string
	OCSPStapled            bool
	// Resumed is true for a TLS 1.3 PSK handshake or a TLS 1.2
	// abbreviated handshake.
	Resumed bool

	// ClientAlert and ServerAlert are the first fatal (else first) alert
	// each side sent, e.g. "fatal handshake_failure (40)". An alert sent
	// after encryption started reads "encrypted alert".
	ClientAlert, ServerAlert string

	JA3, JA3Hash, JA4, JA3S, JA3SHash string

	// ClientHelloAt and ServerHelloAt are the times of the Feed calls that
	// completed those messages.
	ClientHelloAt, ServerHelloAt time.Duration
	// HandshakeDoneAt is when the handshake finished on the wire: for TLS
	// 1.2 and earlier the later of the two Finished records (each follows
	// its side's ChangeCipherSpec), for TLS 1.3 the client's first
	// encrypted record after the ServerHello, which is its Finished (with
	// a client certificate it is the client's Certificate, a record early).
	HandshakeDoneAt time.Duration
	// AppDataUpAt is when the first client application_data record after
	// the client's Finished started. AppDataDownAt is when the first server
	// application_data record after HandshakeDoneAt started; in TLS 1.3
	// that may be a NewSessionTicket, which looks the same on the wire.
	AppDataUpAt, AppDataDownAt time.Duration
}

// Tracker follows the TLS handshake of one proxied connection from the raw
// bytes of both directions, without decrypting anything. It is safe for
// concurrent use by two goroutines, one per direction.
type Tracker struct {
	// finished is read without the lock so that Feed costs one atomic load
	// once a direction needs nothing more.
	finished [2]atomic.Bool

	mu   sync.Mutex
	dirs [2]dirState
	info Info

	tls13           bool // the ServerHello or HelloRetryRequest chose TLS 1.3
	finalHello      bool // a ServerHello that is not a HelloRetryRequest was seen
	earlyData       bool // the client offered 0-RTT
	serverHelloDone bool // the server sent ServerHelloDone (a full TLS <= 1.2 handshake)
	certificate     bool // the server sent a (TLS <= 1.2) Certificate message
	done            bool

	phase          string        // the last handshake step seen (Phase*)
	serverRecordAt time.Duration // the server's last record ended; -1 before
	// firstHello is a copy of the first ClientHello, kept until the server
	// answers with a ServerHello or a HelloRetryRequest has been answered,
	// to tell what a second ClientHello changed.
	firstHello []byte
}

// dirState is one direction's parsing state.
type dirState struct {
	t   *Tracker
	dir Direction
	at  time.Duration // time of the Feed call in progress

	rr recordReader
	hs hsReader

	head  [32]byte // the stream's first bytes, as evidence for NotTLS
	nhead int

	rec        recordHeader
	parse      bool // the current record's body is plaintext to parse
	alert      [2]byte
	nalert     int
	messages   int
	ccs        bool          // TLS <= 1.2: ChangeCipherSpec seen, handshake records are encrypted
	finishedAt time.Duration // this side's Finished record ended; -1 before
	eof        bool
	// warning is this side's first warning alert during the handshake:
	// the cause if the side then hangs up.
	warning     string
	warningCode int
}

// NewTracker returns a Tracker that holds at most maxBuffer bytes per
// direction for reassembly (<= 0 means DefaultMaxBuffer).
func NewTracker(maxBuffer int) *Tracker {
	if maxBuffer <= 0 {
		maxBuffer = DefaultMaxBuffer
	}
	t := &Tracker{info: Info{
		ClientHelloAt:   -1,
		ServerHelloAt:   -1,
		HandshakeDoneAt: -1,
		AppDataUpAt:     -1,
		AppDataDownAt:   -1,
	}, serverRecordAt: -1}
	for i := range t.dirs {
		t.dirs[i] = dirState{
			t:          t,
			dir:        Direction(i),
			rr:         newRecordReader(),
			hs:         hsReader{max: maxBuffer},
			finishedAt: -1,
		}
	}
	return t
}

// Feed is given every chunk read in one direction, with the time since the
// client connection was accepted. It never retains p. Call it before the
// chunk is forwarded, so that what one side sends in answer is always fed
// after what it answers. It returns false once this direction needs no
// more bytes; the caller may then copy that direction without calling Feed.
func (t *Tracker) Feed(dir Direction, p []byte, at time.Duration) (more bool) {
	if t.finished[dir].Load() {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.finished[dir].Load() || len(p) == 0 {
		return !t.finished[dir].Load()
	}
	d := &t.dirs[dir]
	d.at = at
	if d.nhead < len(d.head) {
		d.nhead += copy(d.head[d.nhead:], p)
	}
	if d.rr.off == 0 && t.firstByteNotTLS(d, p[0]) {
		return false
	}
	if err := d.rr.feed(p, d); err != nil {
		t.fail(d, err)
	}
	return !t.finished[dir].Load()
}

// EOF records that a direction ended with a FIN (the read returned
// io.EOF), at the time the relay saw it. A record or handshake message left
// incomplete becomes an ErrTruncated error; during the handshake the close
// is its Failure (and, from the client after the server's flight, a
// Rejection).
func (t *Tracker) EOF(dir Direction, at time.Duration) { t.end(dir, HowClose, at) }

// Reset is EOF for a direction that ended with a reset (the read or write
// failed with ECONNRESET or EPIPE): the Failure then says rst.
func (t *Tracker) Reset(dir Direction, at time.Duration) { t.end(dir, HowRST, at) }

// Cut records that the proxy ended the connection itself (a limit or
// shutdown): a handshake in progress failed by the proxy, with a timeout.
func (t *Tracker) Cut(at time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.handshaking() {
		t.failed(event.SideProxy, HowTimeout, "", -1, at)
	}
}

func (t *Tracker) end(dir Direction, how string, at time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := &t.dirs[dir]
	if d.eof {
		return
	}
	d.eof = true
	t.ended(d, how, at)
	if !t.finished[dir].Load() && !t.stopped() {
		switch {
		case dir == ClientToServer && d.rr.off == 0 && t.dirs[ServerToClient].rr.off == 0:
			t.info.NotTLS = "client closed without sending any bytes"
			t.stopAll()
		case d.rr.partial() != "":
			t.fail(d, fmt.Errorf("%w: stream ended %s", ErrTruncated, d.rr.partial()))
		case d.hs.pending():
			t.fail(d, fmt.Errorf("%w: stream ended %s", ErrTruncated, d.hs.partial()))
		}
	}
	t.finished[dir].Store(true)
}

// Stop ends inspection of both directions: the caller stopped waiting (a
// client that sent nothing within the hello timeout).
func (t *Tracker) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopAll()
}

// Done reports whether dir needs no more bytes.
func (t *Tracker) Done(dir Direction) bool { return t.finished[dir].Load() }

// Info returns a snapshot of what has been seen so far.
func (t *Tracker) Info() Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	info := t.info
	if r := info.Retry; r != nil {
		// The second ClientHello may still fill it in.
		c := *r
		info.Retry = &c
	}
	return info
}

func (t *Tracker) stopped() bool { return t.info.NotTLS != "" || t.info.Err != nil }

func (t *Tracker) stopAll() {
	t.finished[ClientToServer].Store(true)
	t.finished[ServerToClient].Store(true)
}

// firstByteNotTLS rejects a stream on its first byte: a client must open
// with a handshake record, a server with a handshake or an alert record.
func (t *Tracker) firstByteNotTLS(d *dirState, b byte) bool {
	if b == recordHandshake || d.dir == ServerToClient && b == recordAlert {
		return false
	}
	t.notTLS(d, "")
	return true
}

// notTLS reports that a direction's first bytes are not TLS (why, if not
// empty, is the specific defect): the stream is not TLS if that is the
// client, or a server that spoke first; a server answering a ClientHello
// with something else is an inspection error.
func (t *Tracker) notTLS(d *dirState, why string) {
	desc := describeNotTLS(d.head[:d.nhead], why)
	switch {
	case d.dir == ClientToServer:
		t.info.NotTLS = desc
	case t.dirs[ClientToServer].rr.off == 0:
		t.info.NotTLS = "server spoke first: " + desc
	default:
		t.info.Err = fmt.Errorf("server stream: %w: %s", ErrMalformed, desc)
	}
	t.stopAll()
}

// fail stops inspection of both directions with err.
func (t *Tracker) fail(d *dirState, err error) {
	var he *headerError
	if errors.As(err, &he) && he.offset == 0 {
		t.notTLS(d, he.why)
		return
	}
	if !t.stopped() {
		t.info.Err = fmt.Errorf("%s stream: %w", d.dir, err)
	}
	t.stopAll()
}

// describeNotTLS explains, from a stream's first bytes, what it looks like
// instead of a TLS record; why is the header defect found, if any.
func describeNotTLS(b []byte, why string) string {
	text := b
	if i := strings.IndexAny(string(b), "\r\n"); i >= 0 {
		text = b[:i]
	}
	switch {
	case len(b) >= 5 && b[0]&0x80 != 0 && b[2] == 1:
		// SSLv2 record: 2-byte length with the high bit set, then
		// msg_type 1 (client-hello) and the version the client wants.
		return fmt.Sprintf("first bytes % x are an SSLv2 ClientHello (version 0x%02x%02x), not a TLS record",
			b[:5], b[3], b[4])
	case looksLikeHTTP(b):
		return fmt.Sprintf("first bytes %q look like HTTP, not a TLS record", text)
	case strings.HasPrefix(string(b), "SSH-"):
		return fmt.Sprintf("first bytes %q look like SSH, not a TLS record", text)
	case len(text) > 0 && isPrintable(text):
		return fmt.Sprintf("first bytes %q are text, not a TLS record", text)
	case why != "":
		return fmt.Sprintf("first bytes % x are not a TLS record: %s", b, why)
	case b[0]&0x80 != 0:
		return fmt.Sprintf("first bytes % x are not a TLS record (high bit set, as in an SSLv2 header)", b)
	}
	return fmt.Sprintf("first bytes % x are not a TLS record (content type 0x%02x)", b, b[0])
}

func looksLikeHTTP(b []byte) bool {
	s := string(b)
	for _, prefix := range []string{"GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ", "PRI * HTTP/2", "HTTP/"} {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c > 0x7e {
			return false
		}
	}
	return true
}

// recordStart implements recordHandler.
func (d *dirState) recordStart(h recordHeader) error {
	t := d.t
	d.rec = h
	d.parse = false
	if d.hs.pending() && h.typ != recordHandshake {
		return fmt.Errorf("%w: %s record at stream offset %d interrupts a fragmented handshake message",
			ErrUnexpectedMessage, contentTypeName(h.typ), h.offset)
	}
	switch h.typ {
	case recordHandshake:
		switch {
		case d.ccs:
			// TLS <= 1.2: this side's encrypted Finished.
		case t.tls13 && t.finalHello:
			return fmt.Errorf("%w: plaintext handshake record at stream offset %d after the TLS 1.3 server_hello",
				ErrUnexpectedMessage, h.offset)
		default:
			d.parse = true
		}
	case recordAlert:
		// TLS 1.3 sends encrypted alerts as application_data, so an
		// alert record is plaintext unless TLS <= 1.2 encryption is on.
		d.parse = !d.ccs
		if d.ccs {
			t.encryptedAlert(d)
		}
	case recordChangeCipherSpec:
		return t.changeCipherSpec(d, h)
	case recordApplicationData:
		t.applicationDataStart(d)
	}
	return nil
}

// recordBody implements recordHandler.
func (d *dirState) recordBody(frag []byte, last bool) error {
	t := d.t
	if d.parse {
		switch d.rec.typ {
		case recordHandshake:
			if err := d.hs.feed(frag, d.message); err != nil {
				return err
			}
		case recordAlert:
			for _, b := range frag {
				d.alert[d.nalert] = b
				d.nalert++
				if d.nalert == 2 {
					d.nalert = 0
					t.plainAlert(d, d.alert[0], d.alert[1])
				}
			}
		}
	}
	if !last {
		return nil
	}
	if d.dir == ServerToClient && !t.done {
		t.serverRecordAt = d.at
	}
	switch d.rec.typ {
	case recordHandshake:
		if d.ccs && d.finishedAt < 0 {
			d.finishedAt = d.at
			if d.dir == ClientToServer {
				t.phase = PhaseClientFinished
			}
			t.checkDone()
		}
	case recordApplicationData:
		t.applicationDataEnd(d)
	}
	return nil
}

func (t *Tracker) changeCipherSpec(d *dirState, h recordHeader) error {
	if h.length != 1 {
		return fmt.Errorf("%w: change_cipher_spec record at stream offset %d is %d bytes, want 1",
			ErrMalformed, h.offset, h.length)
	}
	if d.hs.pending() {
		return fmt.Errorf("%w: change_cipher_spec at stream offset %d inside a fragmented handshake message",
			ErrUnexpectedMessage, h.offset)
	}
	switch {
	case t.tls13:
		// Middlebox-compatibility CCS (RFC 8446 appendix D.4): ignored.
	case t.info.ServerHello == nil:
		// A TLS 1.3 client sending 0-RTT may send its compatibility CCS
		// right after the ClientHello; a server cannot precede its hello.
		if d.dir == ServerToClient {
			return fmt.Errorf("%w: change_cipher_spec at stream offset %d before the server_hello",
				ErrUnexpectedMessage, h.offset)
		}
	default:
		d.ccs = true
		// A server that switches to encryption without ServerHelloDone is
		// finishing an abbreviated (resumed) handshake.
		if d.dir == ServerToClient && !t.serverHelloDone {
			t.info.Resumed = true
			t.phase = PhaseServerFlight
		}
	}
	return nil
}

// applicationDataStart times the first application data of each side.
func (t *Tracker) applicationDataStart(d *dirState) {
	if d.dir == ServerToClient && t.tls13 && t.finalHello && !t.done && t.phase == PhaseServerHello {
		t.phase = PhaseServerFlight
	}
	switch {
	case d.dir == ClientToServer && d.finishedAt >= 0 && t.info.AppDataUpAt < 0:
		t.info.AppDataUpAt = d.at
	case d.dir == ServerToClient && t.done && t.info.AppDataDownAt < 0:
		t.info.AppDataDownAt = d.at
	}
	t.updateFinished()
}

// applicationDataEnd spots the TLS 1.3 client Finished: the client's first
// encrypted record after the ServerHello. Records sent before it are 0-RTT
// data. A record too short to hold a Finished is an encrypted alert (a
// client rejecting the server's certificate), unless 0-RTT was offered and
// it may be EndOfEarlyData.
func (t *Tracker) applicationDataEnd(d *dirState) {
	if d.dir != ClientToServer || !t.tls13 || !t.finalHello || d.finishedAt >= 0 {
		return
	}
	if d.rec.length < minTLS13FinishedRecord && !t.earlyData {
		t.encryptedAlert(d)
		return
	}
	d.finishedAt = d.at
	t.checkDone()
}

func (t *Tracker) checkDone() {
	c, s := &t.dirs[ClientToServer], &t.dirs[ServerToClient]
	switch {
	case t.done:
		return
	case t.tls13 && c.finishedAt >= 0:
		t.info.HandshakeDoneAt = c.finishedAt
	case !t.tls13 && c.finishedAt >= 0 && s.finishedAt >= 0:
		t.info.HandshakeDoneAt = max(c.finishedAt, s.finishedAt)
	default:
		return
	}
	t.done = true
	t.updateFinished()
}

// updateFinished marks directions that need no more bytes: the handshake
// is done and the direction's first application data was seen.
func (t *Tracker) updateFinished() {
	if !t.done {
		return
	}
	if t.info.AppDataUpAt >= 0 {
		t.finished[ClientToServer].Store(true)
	}
	if t.info.AppDataDownAt >= 0 {
		t.finished[ServerToClient].Store(true)
	}
}

// noteAlert keeps a side's first fatal alert, else its first alert.
func (t *Tracker) noteAlert(dir Direction, alert string) {
	p := &t.info.ClientAlert
	if dir == ServerToClient {
		p = &t.info.ServerAlert
	}
	if *p == "" || !strings.HasPrefix(*p, "fatal") && strings.HasPrefix(alert, "fatal") {
		*p = alert
	}
}

// message handles one complete plaintext handshake message.
func (d *dirState) message(msg []byte) error {
	t := d.t
	typ := msg[0]
	d.messages++
	if t.tls13 && t.finalHello {
		// Everything after a TLS 1.3 ServerHello is encrypted, and the key
		// change must fall on a record boundary (RFC 8446 section 5.1).
		return fmt.Errorf("%w: %s after the TLS 1.3 server_hello in the same record",
			ErrUnexpectedMessage, handshakeTypeName(typ))
	}
	if d.dir == ClientToServer {
		return t.clientMessage(d, typ, msg)
	}
	return t.serverMessage(d, typ, msg)
}

func (t *Tracker) clientMessage(d *dirState, typ uint8, msg []byte) error {
	if d.messages == 1 && typ != typeClientHello {
		return fmt.Errorf("%w: client's first handshake message is %s, want client_hello",
			ErrUnexpectedMessage, handshakeTypeName(typ))
	}
	if typ != typeClientHello {
		return nil
	}
	ch, err := ParseClientHello(msg)
	if err != nil {
		return err
	}
	if t.info.ClientHello != nil {
		// Only a HelloRetryRequest earns a second ClientHello; the first
		// is the one that fingerprints the client.
		if t.info.Retry == nil || d.messages > 2 {
			return fmt.Errorf("%w: second client_hello without a hello_retry_request", ErrUnexpectedMessage)
		}
		t.phase = PhaseClientHello
		t.secondHello(ch, msg, d.at)
		return nil
	}
	t.info.ClientHello = ch
	t.info.ClientHelloAt = d.at
	t.phase = PhaseClientHello
	t.firstHello = bytes.Clone(msg)
	t.info.JA3, t.info.JA3Hash = JA3(&ch.Raw)
	t.info.JA4 = JA4(&ch.Raw)
	t.earlyData = slices.Contains(ch.Raw.Extensions, extEarlyData)
	return nil
}

func (t *Tracker) serverMessage(d *dirState, typ uint8, msg []byte) error {
	if d.messages == 1 && typ != typeServerHello {
		return fmt.Errorf("%w: server's first handshake message is %s, want server_hello",
			ErrUnexpectedMessage, handshakeTypeName(typ))
	}
	if typ != typeServerHello {
		t.phase = PhaseServerFlight
	}
	var err error
	switch typ {
	case typeServerHello:
		err = t.serverHello(d, msg)
	case typeCertificate:
		t.certificate = true
		t.info.Certificates, t.info.CertificateErr, err = parseCertificate(msg)
	case typeServerKeyExchange:
		t.info.ServerKeyExchangeGroup, err = parseServerKeyExchange(msg, t.info.CipherSuite)
	case typeCertificateStatus:
		t.info.OCSPStapled, err = parseCertificateStatus(msg)
	case typeServerHelloDone:
		t.serverHelloDone = true
	}
	return err
}

func (t *Tracker) serverHello(d *dirState, msg []byte) error {
	sh, err := ParseServerHello(msg)
	if err != nil {
		return err
	}
	switch {
	case t.finalHello:
		return fmt.Errorf("%w: second server_hello", ErrUnexpectedMessage)
	case t.info.Retry != nil && sh.HelloRetryRequest:
		return fmt.Errorf("%w: second hello_retry_request", ErrUnexpectedMessage)
	}
	t.info.ServerHello = sh
	t.info.ServerHelloAt = d.at
	t.info.Version = sh.Raw.Version
	t.info.CipherSuite = sh.Raw.CipherSuite
	t.info.JA3S, t.info.JA3SHash = JA3S(&sh.Raw)
	t.tls13 = sh.Raw.Version == VersionTLS13
	t.finalHello = !sh.HelloRetryRequest
	if sh.HelloRetryRequest {
		t.phase = PhaseHelloRetryRequest
		t.helloRetry(sh, d.at)
		return nil
	}
	t.phase = PhaseServerHello
	t.firstHello = nil
	if t.tls13 {
		t.info.Resumed = sh.Raw.PreSharedKey
	}
	return nil
}
