package timing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/inspectproxy/inspectproxy/internal/capture"
	"github.com/inspectproxy/inspectproxy/internal/netns"
	"github.com/inspectproxy/inspectproxy/internal/testdns"
)

// TestHappyEyeballs dials names from a test DNS server whose addresses
// are real: a listener on 127.0.0.1, ::1 with nothing listening (refused),
// and addresses routed into a namespace that drops their SYNs (black holes).
func TestHappyEyeballs(t *testing.T) {
	pair := netns.New(t)
	ln := serve(t, "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	v4 := netip.MustParseAddr("127.0.0.1")
	v6refused := netip.MustParseAddr("::1")
	denyAddr := func(a netip.Addr) func(netip.AddrPort) error {
		return func(ap netip.AddrPort) error {
			if ap.Addr() == a {
				return errors.New("on the list")
			}
			return nil
		}
	}
	type want struct {
		addr    netip.Addr
		outcome string
	}
	for _, tc := range []struct {
		name       string
		addrs      []netip.Addr
		aaaaDelay  time.Duration
		dialer     Dialer
		want       []want
		wantErr    string
		errIs      []error
		errIsNot   []error
		check      func(t *testing.T, res *Dialed)
		wantRemote bool
	}{
		{
			name:  "black-holed AAAA: IPv4 after the attempt delay, not the dial timeout",
			addrs: []netip.Addr{pair.Hole6, v4}, dialer: Dialer{Timeout: 10 * time.Second},
			want: []want{{pair.Hole6, OutcomeCancelled}, {v4, OutcomeConnected}},
			check: func(t *testing.T, res *Dialed) {
				if s := res.Attempts[1].Start; s < DefaultAttemptDelay {
					t.Errorf("IPv4 started at %v, before the attempt delay", s)
				}
				if res.ConnectedAt > 5*time.Second {
					t.Errorf("connected at %v: waited for the black hole", res.ConnectedAt)
				}
			},
		},
		{
			name:  "refused AAAA: IPv4 at once",
			addrs: []netip.Addr{v6refused, v4}, dialer: Dialer{Timeout: 20 * time.Second, AttemptDelay: 10 * time.Second},
			want: []want{{v6refused, OutcomeRefused}, {v4, OutcomeConnected}},
			check: func(t *testing.T, res *Dialed) {
				if s := res.Attempts[1].Start; s >= 10*time.Second {
					t.Errorf("IPv4 started at %v: waited for the attempt delay after a failure", s)
				}
			},
		},
		{
			name:  "AAAA within the resolution delay goes first",
			addrs: []netip.Addr{v6refused, v4}, aaaaDelay: 100 * time.Millisecond, dialer: Dialer{Timeout: 20 * time.Second, ResolutionDelay: 10 * time.Second},
			want: []want{{v6refused, OutcomeRefused}, {v4, OutcomeConnected}},
		},
		{
			name:  "AAAA after the resolution delay: IPv4 alone",
			addrs: []netip.Addr{v6refused, v4}, aaaaDelay: time.Second, dialer: Dialer{Timeout: 20 * time.Second},
			want: []want{{v4, OutcomeConnected}},
			check: func(t *testing.T, res *Dialed) {
				if res.DNS >= time.Second {
					t.Errorf("DNS = %v, the AAAA lookup's; want the A lookup's", res.DNS)
				}
			},
		},
		{
			name:  "denied address recorded, never tried",
			addrs: []netip.Addr{v6refused, v4}, dialer: Dialer{Timeout: 10 * time.Second, Deny: denyAddr(v6refused)},
			want: []want{{v6refused, OutcomeDenied}, {v4, OutcomeConnected}},
		},
		{
			name:  "every address denied",
			addrs: []netip.Addr{v6refused, v4}, dialer: Dialer{Timeout: 10 * time.Second, Deny: func(netip.AddrPort) error { return errors.New("on the list") }},
			want:    []want{{v6refused, OutcomeDenied}, {v4, OutcomeDenied}},
			wantErr: "on the list", errIs: []error{ErrDenied},
		},
		{
			name:  "one denied, one refused: unreachable, not denied",
			addrs: []netip.Addr{v6refused, v4}, dialer: Dialer{Timeout: 10 * time.Second, Deny: denyAddr(v4)},
			want:    []want{{v6refused, OutcomeRefused}, {v4, OutcomeDenied}},
			wantErr: "on the list", errIs: []error{syscall.ECONNREFUSED}, errIsNot: []error{ErrDenied},
		},
		{
			name:  "black holes only: the dial timeout",
			addrs: []netip.Addr{pair.Hole6, pair.Hole4}, dialer: Dialer{Timeout: 700 * time.Millisecond},
			want:    []want{{pair.Hole6, OutcomeTimeout}, {pair.Hole4, OutcomeTimeout}},
			wantErr: "timeout", errIs: []error{context.DeadlineExceeded},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dns := testdns.Start(t, map[string][]netip.Addr{"he.test": tc.addrs})
			dns.Delay(dnsmessage.TypeAAAA, tc.aaaaDelay)
			d := tc.dialer
			d.Resolver = dns.Resolver()
			res, err := d.Dial(context.Background(), "he.test:"+strconv.Itoa(port))
			if res.Conn != nil {
				defer res.Conn.Close()
			}
			var got []want
			for _, a := range res.Attempts {
				got = append(got, want{a.Addr.Addr(), a.Outcome})
				if a.Addr.Port() != uint16(port) || a.Took < 0 || (a.Outcome == OutcomeConnected) != (a.Err == nil) {
					t.Errorf("attempt %+v", a)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("attempts %v, want %v (err %v)", describe(res.Attempts), tc.want, err)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				for _, e := range tc.errIs {
					if !errors.Is(err, e) {
						t.Errorf("err %v is not %v", err, e)
					}
				}
				for _, e := range tc.errIsNot {
					if errors.Is(err, e) {
						t.Errorf("err %v is %v", err, e)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Remote != netip.AddrPortFrom(v4, uint16(port)) || res.DNS < 0 || res.Connect < 0 {
				t.Errorf("remote %v dns %v connect %v", res.Remote, res.DNS, res.Connect)
			}
			if tc.check != nil {
				tc.check(t, res)
			}
		})
	}
}

func describe(as []Attempt) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "[%s %s at %v took %v: %v] ", a.Addr, a.Outcome, a.Start, a.Took, a.Err)
	}
	return b.String()
}

// TestConnectMatchesTheWire holds tcp.connect_ms against a packet capture:
// the SYN to SYN/ACK time dumpcap saw on lo for the same client port.
func TestConnectMatchesTheWire(t *testing.T) {
	ln := serve(t, "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	capt, err := capture.Start(context.Background(), "lo", "tcp port "+strconv.Itoa(port), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	type dial struct {
		local   netip.AddrPort
		connect time.Duration
		kernel  bool
	}
	var dials []dial
	for range 20 {
		res, err := (&Dialer{Timeout: 5 * time.Second}).Dial(context.Background(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		dials = append(dials, dial{res.Conn.LocalAddr().(*net.TCPAddr).AddrPort(), res.Connect, res.ConnectKernel})
		res.Conn.Close()
	}
	if err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	ps, err := capt.Packets()
	if err != nil {
		t.Fatal(err)
	}
	wire := capture.Handshakes(ps)
	for _, d := range dials {
		w, ok := wire[d.local]
		if !ok {
			t.Errorf("%v: no handshake in the capture", d.local)
			continue
		}
		// Kernel and capture stamp the same two packets a few µs apart;
		// a millisecond is room for any load, and still 10× under what
		// user-space timing adds.
		if excess := d.connect - w; !d.kernel || excess < -time.Millisecond || excess > time.Millisecond {
			t.Errorf("%v: connect %v (kernel %v), wire %v", d.local, d.connect, d.kernel, w)
		}
	}
}

// TestLookupFailureSaidOnce: a name that does not exist fails both
// families' lookups alike; the error says so once, on one line (it is an
// event's error and a log field), and still unwraps to the resolver's.
func TestLookupFailureSaidOnce(t *testing.T) {
	dns := testdns.Start(t, nil)
	d := Dialer{Timeout: 5 * time.Second, Resolver: dns.Resolver()}
	res, err := d.Dial(context.Background(), "missing.test:443")
	if res.Conn != nil {
		res.Conn.Close()
		t.Fatal("dialled a name that does not exist")
	}
	if err == nil || strings.Count(err.Error(), "no such host") != 1 || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %q, want the lookup's failure said once, on one line", err)
	}
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("err %v does not unwrap to a not-found *net.DNSError", err)
	}
	t.Log(err)
}
