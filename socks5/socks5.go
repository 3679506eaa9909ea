// Package socks5 is the server side of SOCKS5 (RFC 1928) with
// username/password authentication (RFC 1929): the handshake up to the
// client's request, and the reply. It does not dial or relay: a SOCKS5
// CONNECT is one more source of client streams for the proxy's pipeline,
// under the same access rules and with the same event as an HTTP CONNECT.
//
// Every field is at most 255 bytes long (one length byte), so the
// handshake reads exactly what each message holds into buffers of at most
// 256 bytes and never reads past the request: bytes a client sends
// behind it belong to the stream. Deadlines are the caller's to set.
// SOCKS4 and 4a are recognised and refused with their own rejection code,
// so that a client says "rejected" rather than hanging or misparsing.
package socks5

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Protocol versions, the first byte a client sends.
const (
	Version5 = 0x05
	Version4 = 0x04
)

// Command is the request's CMD.
type Command byte

// Commands (RFC 1928 section 4).
const (
	Connect      Command = 0x01
	Bind         Command = 0x02
	UDPAssociate Command = 0x03
)

func (c Command) String() string {
	switch c {
	case Connect:
		return "CONNECT"
	case Bind:
		return "BIND"
	case UDPAssociate:
		return "UDP ASSOCIATE"
	}
	return "command 0x" + strconv.FormatUint(uint64(c), 16)
}

// Reply is the REP field of a reply.
type Reply byte

// Replies (RFC 1928 section 6).
const (
	Succeeded               Reply = 0x00
	GeneralFailure          Reply = 0x01
	NotAllowed              Reply = 0x02 // connection not allowed by ruleset
	NetworkUnreachable      Reply = 0x03
	HostUnreachable         Reply = 0x04
	ConnectionRefused       Reply = 0x05
	TTLExpired              Reply = 0x06 // used for timeouts, as Tor does
	CommandNotSupported     Reply = 0x07
	AddressTypeNotSupported Reply = 0x08
)

var replyNames = [...]string{"succeeded", "general SOCKS server failure", "connection not allowed by ruleset",
	"network unreachable", "host unreachable", "connection refused", "TTL expired", "command not supported",
	"address type not supported"}

func (r Reply) String() string {
	if int(r) < len(replyNames) {
		return replyNames[r]
	}
	return "reply 0x" + strconv.FormatUint(uint64(r), 16)
}

// Address types (ATYP).
const (
	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// Authentication methods.
const (
	methodNone     = 0x00
	methodUserPass = 0x02
	methodNoneOK   = 0xFF // no acceptable methods
)

// socks4Rejected is SOCKS4's "request rejected or failed".
const socks4Rejected = 0x5B

// Errors Handshake wraps.
var (
	ErrSOCKS4        = errors.New("socks5: SOCKS4 is not supported, use SOCKS5 (e.g. curl --socks5-hostname)")
	ErrNoMethod      = errors.New("socks5: no acceptable authentication method")
	ErrAuth          = errors.New("socks5: authentication failed")
	ErrCommand       = errors.New("socks5: command not supported")
	ErrAddressType   = errors.New("socks5: address type not supported")
	ErrProtocol      = errors.New("socks5: protocol error")
	errNotSOCKS      = fmt.Errorf("%w: not a SOCKS version", ErrProtocol)
	errShortDomain   = fmt.Errorf("%w: empty domain name", ErrProtocol)
	errAuthVersion   = fmt.Errorf("%w: username/password version is not 1", ErrProtocol)
	errSOCKS4TooLong = fmt.Errorf("%w: SOCKS4 user id or host longer than 255 bytes", ErrProtocol)
)

// Config is what the server accepts.
type Config struct {
	// Username and Password, when both are set, require RFC 1929
	// authentication (access.username and access.password); otherwise
	// the client must offer "no authentication".
	Username, Password string
}

func (c Config) authRequired() bool { return c.Username != "" && c.Password != "" }

// Request is what the client asked for.
type Request struct {
	// Version is 5, or 4 for a refused SOCKS4/4a request.
	Version byte
	Command Command
	// Host is the domain name as sent (ATYP 3; the proxy then holds it
	// to what a CONNECT target may be, access.ParseAuthority), or the IP
	// literal's text.
	Host string
	// Addr is the address of an IPv4 or IPv6 request (ATYP 1 or 4).
	Addr netip.Addr
	Port uint16
	// User is the authenticated user name, if any.
	User string
}

// Target is host:port, bracketed for IPv6, as an HTTP CONNECT names it.
func (r *Request) Target() string { return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port))) }

// Handshake reads the greeting, authenticates and reads the request,
// answering the client on the way. On success the request is a CONNECT,
// and the caller answers it with WriteReply once it has dialed (or been
// refused). On an error Handshake has already given the client the answer
// the protocol has (no acceptable method, authentication failure, a
// SOCKS4 rejection, command or address type not supported) and the
// caller closes the connection; the Request, when not nil, holds what was
// read, for the event.
func Handshake(rw io.ReadWriter, c Config) (*Request, error) {
	var b [256]byte
	if _, err := io.ReadFull(rw, b[:1]); err != nil {
		return nil, fmt.Errorf("socks5: greeting: %w", err)
	}
	switch b[0] {
	case Version5:
	case Version4:
		return socks4(rw, b[:])
	default:
		return nil, fmt.Errorf("%w 0x%02x", errNotSOCKS, b[0])
	}
	user, err := negotiate(rw, c, b[:])
	if err != nil {
		return nil, err
	}
	return request(rw, user, b[:])
}

// negotiate chooses the method and runs RFC 1929 when it is user/pass.
func negotiate(rw io.ReadWriter, c Config, b []byte) (string, error) {
	if _, err := io.ReadFull(rw, b[:1]); err != nil {
		return "", fmt.Errorf("socks5: greeting: %w", err)
	}
	methods := b[1 : 1+int(b[0])]
	if _, err := io.ReadFull(rw, methods); err != nil {
		return "", fmt.Errorf("socks5: greeting: %w", err)
	}
	want := byte(methodNone)
	if c.authRequired() {
		want = methodUserPass
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		_, _ = rw.Write([]byte{Version5, methodNoneOK})
		if want == methodUserPass {
			return "", fmt.Errorf("%w: the server requires username/password (RFC 1929), the client offered %x", ErrNoMethod, methods)
		}
		return "", fmt.Errorf("%w: the server has no credentials configured and takes no authentication, the client offered %x", ErrNoMethod, methods)
	}
	if _, err := rw.Write([]byte{Version5, want}); err != nil {
		return "", fmt.Errorf("socks5: method reply: %w", err)
	}
	if want == methodNone {
		return "", nil
	}
	return userPass(rw, c, b)
}

// userPass is the RFC 1929 sub-negotiation.
func userPass(rw io.ReadWriter, c Config, b []byte) (string, error) {
	fail := func(err error) (string, error) {
		_, _ = rw.Write([]byte{0x01, 0x01})
		return "", err
	}
	if _, err := io.ReadFull(rw, b[:2]); err != nil {
		return "", fmt.Errorf("socks5: username/password: %w", err)
	}
	if b[0] != 0x01 {
		return fail(fmt.Errorf("%w (0x%02x)", errAuthVersion, b[0]))
	}
	user := make([]byte, b[1])
	if _, err := io.ReadFull(rw, user); err != nil {
		return "", fmt.Errorf("socks5: username/password: %w", err)
	}
	if _, err := io.ReadFull(rw, b[:1]); err != nil {
		return "", fmt.Errorf("socks5: username/password: %w", err)
	}
	pass := b[1 : 1+int(b[0])]
	if _, err := io.ReadFull(rw, pass); err != nil {
		return "", fmt.Errorf("socks5: username/password: %w", err)
	}
	if !equal(user, c.Username) || !equal(pass, c.Password) {
		return fail(fmt.Errorf("%w for user %q", ErrAuth, user))
	}
	if _, err := rw.Write([]byte{0x01, 0x00}); err != nil {
		return "", fmt.Errorf("socks5: username/password reply: %w", err)
	}
	return string(user), nil
}

// equal compares in constant time, lengths included (hashing first).
func equal(got []byte, want string) bool {
	g, w := sha256.Sum256(got), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

func request(rw io.ReadWriter, user string, b []byte) (*Request, error) {
	if _, err := io.ReadFull(rw, b[:4]); err != nil {
		return nil, fmt.Errorf("socks5: request: %w", err)
	}
	if b[0] != Version5 {
		return nil, fmt.Errorf("%w: request version 0x%02x", ErrProtocol, b[0])
	}
	req := &Request{Version: Version5, Command: Command(b[1]), User: user}
	refuse := func(r Reply, err error) (*Request, error) {
		_ = WriteReply(rw, r, netip.AddrPort{})
		return req, err
	}
	atyp := b[3]
	var addr []byte
	switch atyp {
	case atypIPv4:
		addr = b[:4]
	case atypIPv6:
		addr = b[:16]
	case atypDomain:
		if _, err := io.ReadFull(rw, b[:1]); err != nil {
			return req, fmt.Errorf("socks5: request: %w", err)
		}
		addr = b[1 : 1+int(b[0])]
	default:
		return refuse(AddressTypeNotSupported, fmt.Errorf("%w: 0x%02x", ErrAddressType, atyp))
	}
	if _, err := io.ReadFull(rw, addr); err != nil {
		return req, fmt.Errorf("socks5: request: %w", err)
	}
	switch atyp {
	case atypIPv4:
		req.Addr = netip.AddrFrom4([4]byte(addr))
	case atypIPv6:
		req.Addr = netip.AddrFrom16([16]byte(addr))
	default:
		req.Host = string(addr)
	}
	if req.Addr.IsValid() {
		req.Host = req.Addr.String()
	}
	var port [2]byte
	if _, err := io.ReadFull(rw, port[:]); err != nil {
		return req, fmt.Errorf("socks5: request: %w", err)
	}
	req.Port = binary.BigEndian.Uint16(port[:])
	if req.Command != Connect {
		return refuse(CommandNotSupported, fmt.Errorf("%w: %s %s (only CONNECT)", ErrCommand, req.Command, req.Target()))
	}
	if req.Host == "" {
		return refuse(GeneralFailure, errShortDomain)
	}
	return req, nil
}

// socks4 reads the rest of a SOCKS4 or 4a request, so that closing does
// not reset the connection before the client reads the answer, and
// answers it with the SOCKS4 rejection.
func socks4(rw io.ReadWriter, b []byte) (*Request, error) {
	if _, err := io.ReadFull(rw, b[:7]); err != nil {
		return nil, fmt.Errorf("socks5: SOCKS4 request: %w", err)
	}
	req := &Request{Version: Version4, Command: Command(b[0]), Port: binary.BigEndian.Uint16(b[1:3]), Addr: netip.AddrFrom4([4]byte(b[3:7]))}
	req.Host = req.Addr.String()
	reject := func(err error) (*Request, error) {
		_, _ = rw.Write([]byte{0x00, socks4Rejected, 0, 0, 0, 0, 0, 0})
		return req, err
	}
	user, err := readNUL(rw, b)
	if err != nil {
		return reject(err)
	}
	req.User = user
	version := "SOCKS4"
	if ip := req.Addr.As4(); ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0 { // 4a: 0.0.0.x, then the host name
		version = "SOCKS4a"
		if req.Host, err = readNUL(rw, b); err != nil {
			return reject(err)
		}
		req.Addr = netip.Addr{}
	}
	return reject(fmt.Errorf("%w: %s %s %s refused", ErrSOCKS4, version, req.Command, req.Target()))
}

// readNUL reads a NUL-terminated string of at most 255 bytes.
func readNUL(r io.Reader, b []byte) (string, error) {
	for i := 0; i < 256; i++ {
		if _, err := io.ReadFull(r, b[i:i+1]); err != nil {
			return "", fmt.Errorf("socks5: SOCKS4 request: %w", err)
		}
		if b[i] == 0 {
			return string(b[:i]), nil
		}
	}
	return "", errSOCKS4TooLong
}

// WriteReply answers a request: Succeeded with the address the proxy
// connected from (BND.ADDR and BND.PORT), or a failure, for which bound
// may be the zero value (sent as 0.0.0.0:0).
func WriteReply(w io.Writer, r Reply, bound netip.AddrPort) error {
	a := bound.Addr().Unmap()
	msg := []byte{Version5, byte(r), 0x00}
	switch {
	case a.Is6():
		msg = append(msg, atypIPv6)
		msg = append(msg, a.AsSlice()...)
	case a.Is4():
		msg = append(msg, atypIPv4)
		msg = append(msg, a.AsSlice()...)
	default:
		msg = append(msg, atypIPv4, 0, 0, 0, 0)
	}
	msg = binary.BigEndian.AppendUint16(msg, bound.Port())
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("socks5: reply: %w", err)
	}
	return nil
}
