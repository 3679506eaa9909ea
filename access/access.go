// Package access decides who may use the proxy and where it may connect.
//
// Destinations are checked per address, after DNS, for every address a
// name resolves to, so that no name or address form (0.0.0.0, [::],
// [::ffff:127.0.0.1], 127.0.0.2, the host's LAN address) gets around a
// rule. The default follows Squid's `http_access deny to_localhost` and the
// common `to_linklocal` rule: a client on another host may not reach this
// host itself (loopback, unspecified, link-local, its interface
// addresses) unless access.allow_local_destinations is set. A client on
// this host may, since it could connect there without the proxy; but no
// client may reach the proxy's own listeners, which would make a loop.
package access

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/inspectproxy/inspectproxy/config"
)

// ErrDenied is what every refusal wraps; *DeniedError carries the evidence.
var ErrDenied = errors.New("access: denied")

// Rule names the rule that refused a client or a destination.
type Rule string

// Rules, as they appear in errors and events.
const (
	RuleAllowClients     Rule = "allow_clients"     // the client is not in access.allow_clients
	RuleDenyDestinations Rule = "deny_destinations" // an access.deny_destinations entry holds the destination
	RuleSelf             Rule = "self"              // one of the proxy's own listeners (a loop)
	RuleLoopback         Rule = "loopback"          // 127.0.0.0/8, ::1
	RuleUnspecified      Rule = "unspecified"       // 0.0.0.0/8, :: (the kernel connects them to this host)
	RuleLinkLocal        Rule = "link_local"        // 169.254.0.0/16 (cloud metadata), fe80::/10
	RuleHostAddress      Rule = "host_address"      // an address of one of this host's interfaces
)

// DeniedError is a refusal with its evidence.
type DeniedError struct {
	Rule   Rule
	Client netip.AddrPort
	// Dest is the refused destination address (unmapped); invalid when
	// the client itself was refused.
	Dest netip.AddrPort
	// Entry is the access.deny_destinations or access.allow_clients entry
	// concerned, if any.
	Entry netip.Prefix
	// Network is "tcp" or "udp" for RuleSelf.
	Network string
}

func (e *DeniedError) Error() string {
	switch e.Rule {
	case RuleAllowClients:
		return fmt.Sprintf("access: client %s is not in access.allow_clients", e.Client)
	case RuleDenyDestinations:
		return fmt.Sprintf("access: %s is in access.deny_destinations (entry %s)", e.Dest, e.Entry)
	case RuleSelf:
		return fmt.Sprintf("access: %s reaches the proxy's own %s listener on port %d (a loop)", e.Dest, e.Network, e.Dest.Port())
	default:
		return fmt.Sprintf("access: %s is %s, which clients on other hosts may not reach (client %s; access.allow_local_destinations allows it)", e.Dest, describe[e.Rule], e.Client)
	}
}

var describe = map[Rule]string{
	RuleLoopback:    "a loopback address",
	RuleUnspecified: "an unspecified address (it connects to this host)",
	RuleLinkLocal:   "link-local, next to this host (cloud metadata lives at 169.254.169.254)",
	RuleHostAddress: "an address of this host",
}

// Unwrap makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Unwrap() error { return ErrDenied }

// Policy applies the access rules. It is safe for concurrent use.
type Policy struct {
	allow      []netip.Prefix
	deny       []netip.Prefix
	allowLocal bool
	host       *hostAddrs

	mu   sync.RWMutex
	self []selfListener
}

type selfListener struct {
	network string
	port    uint16
	id      *int // identity for removal
}

// New builds a Policy from the access section of the configuration.
func New(c config.Access) (*Policy, error) {
	p := &Policy{allowLocal: c.AllowLocalDestinations, host: sharedHostAddrs}
	var errs []error
	for _, s := range c.AllowClients {
		pr, err := config.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("access.allow_clients: %w", err))
		}
		p.allow = append(p.allow, pr)
	}
	for _, s := range c.DenyDestinations {
		pr, err := config.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("access.deny_destinations: %w", err))
		}
		p.deny = append(p.deny, pr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// AddSelf registers one of the proxy's own listeners once it is bound
// (ln.Addr() of the HTTP proxy, admin, console and SOCKS5 listeners; the
// WireGuard UDP socket's LocalAddr()); the returned func unregisters it. Any address of this host at that port
// counts as the listener, whatever address it is bound to: the forms
// that reach a listener (0.0.0.0, [::], 127.0.0.2, the LAN address) are
// too many to tell apart safely, and refusing a local service that
// shares a listener's port number is the cheaper mistake.
func (p *Policy) AddSelf(addr net.Addr) (remove func()) {
	ap, err := addrPort(addr)
	if err != nil { // not an IP listener: nothing a dial could reach
		return func() {}
	}
	id := new(int)
	p.mu.Lock()
	p.self = append(p.self, selfListener{network: addr.Network(), port: ap.Port(), id: id})
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.self = slices.DeleteFunc(p.self, func(s selfListener) bool { return s.id == id })
	}
}

// Client checks a client against access.allow_clients. A client on this
// host (loopback or one of its addresses) is always admitted: it could use
// the network directly, and refusing it only stops people trying the
// proxy on the machine it runs on.
func (p *Policy) Client(client netip.AddrPort) error {
	if len(p.allow) == 0 || p.onHost(client.Addr()) {
		return nil
	}
	if _, ok := match(p.allow, client.Addr().Unmap()); ok {
		return nil
	}
	return &DeniedError{Rule: RuleAllowClients, Client: client}
}

// Destination checks one resolved destination address of a client's
// stream; network is "tcp" or "udp".
func (p *Policy) Destination(network string, client, dst netip.AddrPort) error {
	d := netip.AddrPortFrom(dst.Addr().Unmap().WithZone(""), dst.Port())
	a := d.Addr()
	deny := func(r Rule, entry netip.Prefix) error {
		return &DeniedError{Rule: r, Client: client, Dest: d, Entry: entry, Network: network}
	}
	local := localRule(a)
	mine := local == RuleUnspecified || local == RuleLoopback || p.host.has(a)
	if local == "" && mine {
		local = RuleHostAddress
	}
	if mine && p.isSelfPort(network, d.Port()) {
		return deny(RuleSelf, netip.Prefix{})
	}
	if e, ok := match(p.deny, a); ok {
		return deny(RuleDenyDestinations, e)
	}
	if local != "" && !p.allowLocal && !p.onHost(client.Addr()) {
		return deny(local, netip.Prefix{})
	}
	return nil
}

// DenyFor returns the check for a client's destinations, in the form the
// dialer's Deny hook takes (timing.Dialer.Deny).
func (p *Policy) DenyFor(network string, client netip.AddrPort) func(netip.AddrPort) error {
	return func(dst netip.AddrPort) error { return p.Destination(network, client, dst) }
}

func (p *Policy) isSelfPort(network string, port uint16) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.ContainsFunc(p.self, func(s selfListener) bool { return s.network == network && s.port == port })
}

// onHost reports whether a is this host: a loopback address or one of
// its interfaces' addresses.
func (p *Policy) onHost(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	return a.IsLoopback() || p.host.has(a)
}

// thisNetwork is RFC 1122's "this host on this network"; Linux connects
// 0.0.0.0 to this host.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// localRule classifies an unmapped address that is this host or next to
// it by its form alone; host addresses need the interface list.
func localRule(a netip.Addr) Rule {
	switch {
	case a.IsUnspecified() || thisNetwork.Contains(a):
		return RuleUnspecified
	case a.IsLoopback():
		return RuleLoopback
	case a.IsLinkLocalUnicast():
		return RuleLinkLocal
	}
	return ""
}

// match returns the first of ps that holds a.
func match(ps []netip.Prefix, a netip.Addr) (netip.Prefix, bool) {
	for _, p := range ps {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// addrPort is a listener's address as a netip.AddrPort.
func addrPort(a net.Addr) (netip.AddrPort, error) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort(), nil
	case *net.UDPAddr:
		return a.AddrPort(), nil
	}
	return netip.ParseAddrPort(a.String())
}
