package socks5

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/inspectproxy/inspectproxy/stream"
)

type pipe struct {
	io.Reader
	out bytes.Buffer
}

func (p *pipe) Write(b []byte) (int, error) { return p.out.Write(b) }

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestWire holds the bytes exchanged against RFC 1928 (sections 3, 4, 5,
// 6), RFC 1929 (section 2) and the SOCKS4 protocol's reply format.
func TestWire(t *testing.T) {
	auth := Config{Username: "u", Password: "pw"}
	for _, tc := range []struct {
		name   string
		cfg    Config
		in     string // client bytes, hex
		out    string // server bytes, hex
		err    error
		target string
		rest   string // bytes left unread behind the request
	}{
		{name: "connect IPv4", in: "05 01 00  05 01 00 01 7f000001 0050", out: "05 00", target: "127.0.0.1:80"},
		{name: "connect domain, data behind it unread", in: "05 01 00  05 01 00 03 0b 6578616d706c652e636f6d 01bb  16 03 01",
			out: "05 00", target: "example.com:443", rest: "160301"},
		{name: "connect IPv6", in: "05 01 00  05 01 00 04 00000000000000000000000000000001 1f90", out: "05 00", target: "[::1]:8080"},
		{name: "connect mapped IPv6", in: "05 01 00  05 01 00 04 00000000000000000000ffff7f000001 0050", out: "05 00", target: "[::ffff:127.0.0.1]:80"},
		{name: "no-auth among several methods", in: "05 03 02 01 00  05 01 00 01 7f000001 0050", out: "05 00", target: "127.0.0.1:80"},
		{name: "only user/pass offered, none configured", in: "05 01 02", out: "05 ff", err: ErrNoMethod},
		{name: "no methods at all", in: "05 00", out: "05 ff", err: ErrNoMethod},
		{name: "user/pass right", cfg: auth, in: "05 02 00 02  01 01 75 02 7077  05 01 00 01 7f000001 0050", out: "05 02 01 00", target: "127.0.0.1:80"},
		{name: "user/pass wrong", cfg: auth, in: "05 01 02  01 01 75 02 7078", out: "05 02 01 01", err: ErrAuth},
		{name: "user/pass longer password", cfg: auth, in: "05 01 02  01 01 75 03 707778", out: "05 02 01 01", err: ErrAuth},
		{name: "user/pass empty", cfg: auth, in: "05 01 02  01 00 00", out: "05 02 01 01", err: ErrAuth},
		{name: "user/pass bad version", cfg: auth, in: "05 01 02  05 01 75 02 7077", out: "05 02 01 01", err: ErrProtocol},
		{name: "no-auth only, credentials configured", cfg: auth, in: "05 01 00", out: "05 ff", err: ErrNoMethod},
		{name: "BIND", in: "05 01 00  05 02 00 01 c0000201 0050", out: "05 00  05 07 00 01 00000000 0000", err: ErrCommand},
		{name: "UDP ASSOCIATE", in: "05 01 00  05 03 00 01 00000000 0000", out: "05 00  05 07 00 01 00000000 0000", err: ErrCommand},
		{name: "unknown command", in: "05 01 00  05 09 00 01 7f000001 0050", out: "05 00  05 07 00 01 00000000 0000", err: ErrCommand},
		{name: "unknown address type", in: "05 01 00  05 01 00 02 7f000001 0050", out: "05 00  05 08 00 01 00000000 0000", err: ErrAddressType},
		{name: "empty domain", in: "05 01 00  05 01 00 03 00 0050", out: "05 00  05 01 00 01 00000000 0000", err: ErrProtocol},
		{name: "wrong request version", in: "05 01 00  04 01 00 01 7f000001 0050", out: "05 00", err: ErrProtocol},
		{name: "truncated request", in: "05 01 00  05 01 00 03 0b 6578", out: "05 00", err: io.ErrUnexpectedEOF},
		{name: "SOCKS4", in: "04 01 0050 7f000001 00", out: "00 5b 000000000000", err: ErrSOCKS4, target: "127.0.0.1:80"},
		{name: "SOCKS4a", in: "04 01 01bb 00000001 626f6200 6578616d706c652e636f6d00", out: "00 5b 000000000000", err: ErrSOCKS4, target: "example.com:443"},
		{name: "SOCKS4 user id never ends", in: "04 01 0050 7f000001" + strings.Repeat("41", 300), out: "00 5b 000000000000", err: ErrProtocol},
		{name: "HTTP", in: "434f4e4e454354", out: "", err: ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(unhex(tc.in))
			p := &pipe{Reader: r}
			req, err := Handshake(p, tc.cfg)
			if got, want := hex.EncodeToString(p.out.Bytes()), hex.EncodeToString(unhex(tc.out)); got != want {
				t.Errorf("server wrote %s, want %s", got, want)
			}
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.target != "" && (req == nil || req.Target() != tc.target) {
				t.Errorf("request %+v, want target %s", req, tc.target)
			}
			if rest, _ := io.ReadAll(r); hex.EncodeToString(rest) != tc.rest && tc.err == nil {
				t.Errorf("left unread %x, want %s", rest, tc.rest)
			}
		})
	}
}

func TestWriteReply(t *testing.T) {
	for _, tc := range []struct {
		r     Reply
		bound string
		want  string
	}{
		{Succeeded, "192.0.2.1:40000", "05 00 00 01 c0000201 9c40"},
		{Succeeded, "[2001:db8::1]:443", "05 00 00 04 20010db8000000000000000000000001 01bb"},
		{Succeeded, "[::ffff:192.0.2.1]:1", "05 00 00 01 c0000201 0001"},
		{ConnectionRefused, "", "05 05 00 01 00000000 0000"},
	} {
		var b bytes.Buffer
		var ap netip.AddrPort
		if tc.bound != "" {
			ap = netip.MustParseAddrPort(tc.bound)
		}
		if err := WriteReply(&b, tc.r, ap); err != nil || hex.EncodeToString(b.Bytes()) != hex.EncodeToString(unhex(tc.want)) {
			t.Errorf("WriteReply(%v, %s) = %x, %v; want %s", tc.r, tc.bound, b.Bytes(), err, tc.want)
		}
	}
}

func TestReplyFor(t *testing.T) {
	opErr := func(errno syscall.Errno) error {
		return fmt.Errorf("timing: connect x:1: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errno})
	}
	for _, tc := range []struct {
		r    stream.Refusal
		want Reply
	}{
		{stream.Refusal{Reason: stream.Denied, Err: errors.New("access: 127.0.0.1:80 is a loopback address")}, NotAllowed},
		{stream.Refusal{Reason: stream.Overloaded}, GeneralFailure},
		{stream.Refusal{Reason: stream.Unreachable, Err: opErr(syscall.ECONNREFUSED)}, ConnectionRefused},
		{stream.Refusal{Reason: stream.Unreachable, Err: opErr(syscall.ENETUNREACH)}, NetworkUnreachable},
		{stream.Refusal{Reason: stream.Unreachable, Err: opErr(syscall.EHOSTUNREACH)}, HostUnreachable},
		{stream.Refusal{Reason: stream.Unreachable, Err: fmt.Errorf("x: %w", context.DeadlineExceeded)}, TTLExpired},
		{stream.Refusal{Reason: stream.Unreachable, Err: &net.DNSError{Err: "no such host", Name: "x.test", IsNotFound: true}}, HostUnreachable},
	} {
		if got := ReplyFor(tc.r); got != tc.want {
			t.Errorf("ReplyFor(%v) = %v, want %v", tc.r, got, tc.want)
		}
	}
}

// FuzzHandshake: any bytes, with or without credentials configured: never
// a panic, never more than a few small replies, and a request only when
// the protocol was followed.
func FuzzHandshake(f *testing.F) {
	for _, s := range []string{
		"050100050100017f0000010050", "0501000501000300", "050102010175027077", "0401005000000001626f6200",
		"05ff", "05", "", "0501000502000100000000", "0501000501000400000000000000000000ffff00000000" + "0050",
		"0501000501000309" + hex.EncodeToString([]byte("127.0.0.2")) + "0050",
	} {
		f.Add(unhex(s), false)
		f.Add(unhex(s), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, withAuth bool) {
		cfg := Config{}
		if withAuth {
			cfg = Config{Username: "u", Password: "pw"}
		}
		p := &pipe{Reader: bytes.NewReader(in)}
		req, err := Handshake(p, cfg)
		if p.out.Len() > 2+2+22 {
			t.Fatalf("wrote %d bytes", p.out.Len())
		}
		if err == nil && (req == nil || req.Command != Connect || req.Host == "" || req.Version != Version5) {
			t.Fatalf("accepted %+v", req)
		}
	})
}
