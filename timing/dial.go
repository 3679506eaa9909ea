package timing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// ErrDenied is returned when every address of a target is on the deny list.
var ErrDenied = errors.New("timing: destination denied")

// Dialer dials TCP upstreams, timing DNS and the three-way handshake apart.
type Dialer struct {
	// Timeout bounds DNS and connect together.
	Timeout time.Duration
	// Resolver resolves names; nil uses net.DefaultResolver.
	Resolver *net.Resolver
	// Deny, when set, refuses an address by returning why.
	Deny func(netip.AddrPort) error
}

// Dialed is the outcome of a dial, filled as far as it got.
type Dialed struct {
	Conn *net.TCPConn
	// DNS is the lookup time; -1 for an IP literal.
	DNS time.Duration
	// Connect is the successful address's TCP handshake time; -1 if none.
	Connect time.Duration
	// ConnectedAt is when the connection was up, from the dial's start.
	ConnectedAt time.Duration
	Remote      netip.AddrPort
	// Attempts is how many addresses were tried.
	Attempts int
}

// Dial connects to hostport. Addresses are tried in the resolver's order,
// each with the time that is left; the error says which failed and why.
func (d *Dialer) Dial(ctx context.Context, hostport string) (*Dialed, error) {
	start := time.Now()
	res := &Dialed{DNS: -1, Connect: -1}
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return res, fmt.Errorf("timing: target %q: %w", hostport, err)
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return res, fmt.Errorf("timing: target %q: %w", hostport, err)
	}
	addrs, err := d.resolve(ctx, host, res)
	if err != nil {
		return res, err
	}
	var errs []error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		if d.Deny != nil {
			if why := d.Deny(ap); why != nil {
				errs = append(errs, fmt.Errorf("%w: %s: %w", ErrDenied, ap, why))
				continue
			}
		}
		res.Attempts++
		t0 := time.Now()
		var nd net.Dialer
		c, err := nd.DialContext(ctx, "tcp", ap.String())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Connect = time.Since(t0)
		res.ConnectedAt = time.Since(start)
		res.Conn = c.(*net.TCPConn)
		res.Remote = ap
		return res, nil
	}
	return res, fmt.Errorf("timing: connect %s: %w", hostport, errors.Join(errs...))
}

func (d *Dialer) resolve(ctx context.Context, host string, res *Dialed) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	t0 := time.Now()
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	res.DNS = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("timing: dns %s: %w", host, err)
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	return addrs, nil
}
