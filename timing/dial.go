package timing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/inspectproxy/inspectproxy/event"
)

// ErrDenied is wrapped by a dial error when every address of the target
// was refused by the Deny hook.
var ErrDenied = errors.New("timing: destination denied")

// RFC 8305 timing, the values it recommends.
const (
	// DefaultAttemptDelay is the Connection Attempt Delay: how long an
	// attempt has before the next address is tried alongside it.
	DefaultAttemptDelay = 250 * time.Millisecond
	// DefaultResolutionDelay is how long an A answer waits for the AAAA
	// answer before connecting over IPv4.
	DefaultResolutionDelay = 50 * time.Millisecond
)

// Bounds on what one dial holds: a name may resolve to hundreds of
// addresses, and each attempt is a socket.
const (
	maxAddrsPerFamily = 32
	maxTried          = 16
)

// Outcomes of an attempt, as event.Attempt.Outcome has them.
const (
	OutcomeConnected   = "connected"
	OutcomeRefused     = "refused"
	OutcomeTimeout     = "timeout"
	OutcomeUnreachable = "unreachable"
	OutcomeCancelled   = "cancelled"
	OutcomeDenied      = "denied"
	OutcomeError       = "error"
)

// Dialer dials TCP upstreams with Happy Eyeballs (RFC 8305) and records
// every attempt. A Dialer is a value: copy it to give one client's dials
// their own Deny hook.
type Dialer struct {
	// Timeout bounds DNS and every connect attempt together.
	Timeout time.Duration
	// Resolver resolves names; nil uses net.DefaultResolver.
	Resolver *net.Resolver
	// Deny, when set, refuses an address by returning why; it is called
	// for every address before it is tried, and a refused address is
	// recorded (outcome denied) and never connected to.
	Deny func(netip.AddrPort) error
	// AttemptDelay and ResolutionDelay default to RFC 8305's 250 ms and
	// 50 ms when zero.
	AttemptDelay    time.Duration
	ResolutionDelay time.Duration
}

// Attempt is one address of a dial: tried, or refused by Deny.
type Attempt struct {
	Addr netip.AddrPort
	// Start is when it began and Took how long it ran until it
	// connected, failed or was cancelled, measured by the proxy's clock
	// from the dial's start.
	Start, Took time.Duration
	Outcome     string
	Err         error
}

// Dialed is the outcome of a dial, filled as far as it got.
type Dialed struct {
	Conn *net.TCPConn
	// DNS is the time of the lookup (A or AAAA) that gave the connected
	// address, or of the longest lookup when none connected; -1 for an IP
	// literal.
	DNS time.Duration
	// Connect is the winning address's three-way handshake; -1 if none.
	Connect time.Duration
	// ConnectKernel is true when Connect is the kernel's own SYN to
	// SYN/ACK round trip (TCP_INFO tcpi_rtt, microseconds), false when it
	// is the proxy's clock around connect(2) (the SYN was retransmitted,
	// or the system does not say).
	ConnectKernel bool
	// ConnectedAt is when the connection was up, from the dial's start.
	ConnectedAt time.Duration
	Remote      netip.AddrPort
	// Attempts are every address tried or denied, in start order.
	Attempts []Attempt
}

// EventAttempts converts attempts for an event; offset is when the dial
// started on the event's clock (since the client was accepted).
func EventAttempts(as []Attempt, offset time.Duration) []event.Attempt {
	out := make([]event.Attempt, 0, len(as))
	for _, a := range as {
		ea := event.Attempt{Addr: a.Addr.String(), StartMS: MS(offset + a.Start), MS: MS(a.Took), Outcome: a.Outcome}
		if a.Err != nil {
			ea.Error = a.Err.Error()
		}
		out = append(out, ea)
	}
	return out
}

// Dial connects to hostport. A name is resolved for A and AAAA at once;
// addresses are tried IPv6 first, alternating families, a new one every
// AttemptDelay or as soon as one fails; the first to connect wins and the
// others are cancelled. The error says which addresses failed and why.
func (d *Dialer) Dial(ctx context.Context, hostport string) (*Dialed, error) {
	r := &race{
		d:       d,
		start:   time.Now(),
		res:     &Dialed{DNS: -1, Connect: -1},
		lookups: make(chan lookup, 2),
		results: make(chan result),
		dns:     [2]time.Duration{-1, -1},
	}
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return r.res, fmt.Errorf("timing: target %q: %w", hostport, err)
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return r.res, fmt.Errorf("timing: target %q: %w", hostport, err)
	}
	r.port = uint16(port)
	if a, err := netip.ParseAddr(host); err == nil {
		return r.one(ctx, hostport, host, a.Unmap())
	}
	lctx, cancel := context.WithCancel(ctx) // a winner need not wait for the other family
	defer cancel()
	r.resolve(lctx, host)
	return r.run(ctx, hostport, host)
}

// race is one dial's state, owned by the goroutine running Dial.
type race struct {
	d     *Dialer
	start time.Time
	port  uint16
	res   *Dialed

	pending  [2][]netip.Addr // by family: 0 IPv6, 1 IPv4
	next     int             // family to try next
	lookups  chan lookup
	waiting  int // lookups not answered yet
	dns      [2]time.Duration
	dnsErrs  []error
	results  chan result
	running  map[int]context.CancelFunc // attempt index
	tried    int
	holdFor6 <-chan time.Time // the resolution delay, while it runs
}

type lookup struct {
	family int
	addrs  []netip.Addr
	err    error
	took   time.Duration
}

type result struct {
	i    int
	conn net.Conn
	err  error
	// began is when connect(2) was about to be made (the socket exists);
	// zero if it never was.
	began, end time.Time
}

func (r *race) since() time.Duration { return time.Since(r.start) }

func (r *race) resolve(ctx context.Context, host string) {
	res := r.d.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	r.waiting = 2
	for fam, network := range [2]string{"ip6", "ip4"} {
		go func() {
			t0 := time.Now()
			addrs, err := res.LookupNetIP(ctx, network, host)
			r.lookups <- lookup{family: fam, addrs: addrs, err: err, took: time.Since(t0)}
		}()
	}
}

// add queues an address under its family.
func (r *race) add(a netip.Addr) {
	fam := familyOf(a)
	if len(r.pending[fam]) < maxAddrsPerFamily {
		r.pending[fam] = append(r.pending[fam], a)
	}
}

func (r *race) gotLookup(l lookup) {
	r.waiting--
	r.dns[l.family] = l.took
	if l.err != nil {
		r.dnsErrs = append(r.dnsErrs, l.err)
	}
	for _, a := range l.addrs {
		r.add(a.Unmap())
	}
	switch {
	case l.family == 0:
		r.holdFor6 = nil
	case r.waiting == 1 && len(l.addrs) > 0 && len(r.pending[0]) == 0:
		// A before AAAA: give AAAA the resolution delay.
		r.holdFor6 = time.After(r.resolutionDelay())
	}
}

func (r *race) attemptDelay() time.Duration {
	if r.d.AttemptDelay > 0 {
		return r.d.AttemptDelay
	}
	return DefaultAttemptDelay
}

func (r *race) resolutionDelay() time.Duration {
	if r.d.ResolutionDelay > 0 {
		return r.d.ResolutionDelay
	}
	return DefaultResolutionDelay
}

// pop takes the next address, alternating families.
func (r *race) pop() (netip.Addr, bool) {
	fam := r.next
	if len(r.pending[fam]) == 0 {
		fam = 1 - fam
	}
	if len(r.pending[fam]) == 0 {
		return netip.Addr{}, false
	}
	a := r.pending[fam][0]
	r.pending[fam] = r.pending[fam][1:]
	r.next = 1 - fam
	return a, true
}

// startNext starts the next address that Deny allows, recording the ones
// it refuses on the way; it reports whether an attempt started.
func (r *race) startNext(ctx context.Context) bool {
	for r.tried < maxTried {
		a, ok := r.pop()
		if !ok {
			return false
		}
		ap := netip.AddrPortFrom(a, r.port)
		if r.denied(ap) {
			continue
		}
		i := len(r.res.Attempts)
		r.res.Attempts = append(r.res.Attempts, Attempt{Addr: ap, Start: r.since()})
		actx, cancel := context.WithCancel(ctx)
		r.running[i] = cancel
		r.tried++
		go func() { r.results <- connect(actx, i, ap) }()
		return true
	}
	return false
}

// denied asks the Deny policy about ap and records a refused address as a
// denied attempt.
func (r *race) denied(ap netip.AddrPort) bool {
	if r.d.Deny == nil {
		return false
	}
	why := r.d.Deny(ap)
	if why != nil {
		r.res.Attempts = append(r.res.Attempts, Attempt{Addr: ap, Start: r.since(), Outcome: OutcomeDenied, Err: deniedError{why}})
	}
	return why != nil
}

// connect makes attempt i, to ap.
func connect(ctx context.Context, i int, ap netip.AddrPort) result {
	// The clock starts when the socket is made, right before connect(2):
	// not when the goroutine was scheduled. No TCP keep-alive: the proxy
	// sends nothing its client did not, and limits.idle_timeout ends a
	// dead stream.
	var began time.Time
	nd := net.Dialer{KeepAlive: -1, Control: func(string, string, syscall.RawConn) error {
		began = time.Now()
		return nil
	}}
	c, err := nd.DialContext(ctx, "tcp", ap.String())
	return result{i: i, conn: c, err: err, began: began, end: time.Now()}
}

// one dials a single address (an IP literal) on the caller's goroutine:
// there is nothing to race.
func (r *race) one(ctx context.Context, hostport, host string, a netip.Addr) (*Dialed, error) {
	ap := netip.AddrPortFrom(a, r.port)
	if r.denied(ap) {
		return r.res, r.failure(ctx, hostport, host)
	}
	r.res.Attempts = append(r.res.Attempts, Attempt{Addr: ap, Start: r.since()})
	r.tried++
	res := connect(ctx, 0, ap)
	if res.err == nil {
		r.win(res)
		return r.res, nil
	}
	r.finish(res, classify(res.err), res.err)
	return r.res, r.failure(ctx, hostport, host)
}

func (r *race) run(ctx context.Context, hostport, host string) (*Dialed, error) {
	r.running = map[int]context.CancelFunc{}
	ready := true // may start an attempt now
	var nextAt <-chan time.Time
	for {
		if ready && r.holdFor6 == nil && r.startNext(ctx) {
			ready = false
			nextAt = time.After(r.attemptDelay())
		}
		if len(r.running) == 0 && r.waiting == 0 && r.holdFor6 == nil && (len(r.pending[0])+len(r.pending[1]) == 0 || r.tried >= maxTried) {
			return r.res, r.failure(ctx, hostport, host)
		}
		select {
		case l := <-r.lookups:
			r.gotLookup(l)
		case <-r.holdFor6:
			r.holdFor6 = nil
		case <-nextAt:
			ready = true
			nextAt = nil
		case res := <-r.results:
			cancel := r.running[res.i]
			delete(r.running, res.i)
			cancel()
			if res.err == nil {
				r.win(res)
				r.drain(OutcomeCancelled, errors.New("another address connected first"))
				return r.res, nil
			}
			r.finish(res, classify(res.err), res.err)
			ready = true // a failure starts the next address at once
		case <-ctx.Done():
			outcome := OutcomeCancelled
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				outcome = OutcomeTimeout
			}
			r.drain(outcome, ctx.Err())
			return r.res, r.failure(ctx, hostport, host)
		}
	}
}

func (r *race) finish(res result, outcome string, err error) {
	a := &r.res.Attempts[res.i]
	if !res.began.IsZero() {
		a.Start = res.began.Sub(r.start)
	}
	a.Took = res.end.Sub(r.start) - a.Start
	a.Outcome, a.Err = outcome, err
}

func (r *race) win(res result) {
	r.finish(res, OutcomeConnected, nil)
	a := r.res.Attempts[res.i]
	c := res.conn.(*net.TCPConn)
	r.res.Conn, r.res.Remote = c, a.Addr
	r.res.ConnectedAt = a.Start + a.Took
	r.res.Connect, r.res.ConnectKernel = a.Took, false
	if rtt, ok := HandshakeRTT(c); ok {
		r.res.Connect, r.res.ConnectKernel = rtt, true
	}
	if fam := familyOf(a.Addr.Addr()); r.dns[fam] >= 0 {
		r.res.DNS = r.dns[fam]
	}
}

// drain cancels the attempts still running and waits for them, so that
// none outlives Dial; one that connected anyway is closed.
func (r *race) drain(outcome string, why error) {
	for _, cancel := range r.running {
		cancel()
	}
	for len(r.running) > 0 {
		res := <-r.results
		delete(r.running, res.i)
		if res.conn != nil {
			res.conn.Close()
		}
		r.finish(res, outcome, why)
	}
}

// failure builds the error of a dial with no winner. It wraps ErrDenied
// only when every address was denied, and otherwise the errors of the
// addresses tried, so that errors.Is finds why they failed.
func (r *race) failure(ctx context.Context, hostport, host string) error {
	r.res.DNS = max(r.dns[0], r.dns[1])
	ctxErr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(dl) {
		ctxErr = context.DeadlineExceeded // the sockets' timers fired before the context's
	}
	if len(r.res.Attempts) == 0 {
		if ctxErr != nil {
			return fmt.Errorf("timing: dns %s: %w", host, ctxErr)
		}
		return fmt.Errorf("timing: dns %s: %w", host, joinLookupErrors(r.dnsErrs))
	}
	var msgs []string
	var denied, tried []error
	for _, a := range r.res.Attempts {
		msgs = append(msgs, fmt.Sprintf("%s %s: %v", a.Addr, a.Outcome, a.Err))
		if a.Outcome == OutcomeDenied {
			denied = append(denied, a.Err)
		} else {
			tried = append(tried, a.Err)
		}
	}
	if r.tried >= maxTried && len(r.pending[0])+len(r.pending[1]) > 0 {
		msgs = append(msgs, fmt.Sprintf("%d more addresses not tried (at most %d per dial)", len(r.pending[0])+len(r.pending[1]), maxTried))
	}
	wrapped := tried
	if len(tried) == 0 {
		wrapped = denied
	}
	if ctxErr != nil { // the attempts may have seen the deadline first
		wrapped = append(wrapped, ctxErr)
	}
	return &dialError{msg: fmt.Sprintf("timing: connect %s: %s", hostport, strings.Join(msgs, "; ")), errs: wrapped}
}

// deniedError is a Deny hook's refusal: its own words, and ErrDenied.
type deniedError struct{ why error }

func (e deniedError) Error() string   { return e.why.Error() }
func (e deniedError) Unwrap() []error { return []error{ErrDenied, e.why} }

type dialError struct {
	msg  string
	errs []error
}

func (e *dialError) Error() string   { return e.msg }
func (e *dialError) Unwrap() []error { return e.errs }

// HandshakeRTT is the kernel's round trip of the handshake a connect just
// made, TCP_INFO's tcpi_rtt: its first RTT sample runs from the SYN's
// transmission to the SYN/ACK, in microseconds, and as long as nothing
// has been sent on c since, nothing has updated it. A retransmitted SYN
// gives no sample (Karn's rule), so then ok is false, as it is where the
// kernel does not say (not Linux).
func HandshakeRTT(c *net.TCPConn) (rtt time.Duration, ok bool) {
	info, ok := Info(c)
	if !ok || info.Retransmits != 0 || info.RTT == 0 {
		return 0, false
	}
	return info.RTT, true
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return 1
	}
	return 0
}

// classify names an attempt's failure as event.Attempt.Outcome does.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return OutcomeRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETDOWN), errors.Is(err, syscall.EHOSTDOWN), errors.Is(err, syscall.EADDRNOTAVAIL):
		return OutcomeUnreachable
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return OutcomeTimeout
	case errors.Is(err, context.Canceled):
		return OutcomeCancelled
	}
	return OutcomeError
}

// lookupErrors are the lookups' errors of one dial, said on one line (an
// event's error, a log field): the same failure of both families, as an
// NXDOMAIN is, said once. errors.Is and As see each one.
type lookupErrors []error

func joinLookupErrors(errs []error) error {
	var out lookupErrors
	for _, err := range errs {
		if !slices.ContainsFunc(out, func(e error) bool { return e.Error() == err.Error() }) {
			out = append(out, err)
		}
	}
	switch len(out) {
	case 0:
		return errors.New("no addresses")
	case 1:
		return out[0]
	}
	return out
}

func (e lookupErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e lookupErrors) Unwrap() []error { return e }
