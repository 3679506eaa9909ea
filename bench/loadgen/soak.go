package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The soak test runs its own loopback servers, drives thousands of
// connections with random behaviour through the proxy, then checks that
// every client connection produced exactly one event and that the proxy's
// goroutines and file descriptors came back to their baseline.

var errWrongBytes = errors.New("WRONG BYTES")

type soak struct {
	proxy, admin, events string
	pid                  int
	dur                  time.Duration
	conc                 int
	maxConns             int
	sigtermAfter         time.Duration
	exitWait, drainWait  time.Duration
	mitmIP               string

	passCfg, mitmCfg *tls.Config
	tlsPort          int    // TLS backend on 127.0.0.1 and mitmIP
	rstAddr          string // accepts then resets
	echoAddr         string // plain TCP echo with half-close
	httpAddr         string // plain HTTP
	closedAddr       string // nothing listens
	okBody           []byte
	hello            []byte // a real ClientHello record
	pre              int    // events in the file before the first connection

	mu      sync.Mutex
	records []*record
	stats   map[string]*opStat
	// termFlag is set, under mu, when SIGTERM is sent.
	termFlag atomic.Bool
}

type record struct {
	addr      string
	behaviour string
	n         atomic.Int64 // bytes read from the proxy
	// sentBeforeTerm: the TCP connection was made before SIGTERM was sent.
	beforeTerm bool
}

type opStat struct {
	n, unexpected, wrong int
	sample               string
}

// countConn counts what the proxy sent, so a connection that got any
// answer is known to have been accepted.
type countConn struct {
	*net.TCPConn
	rec *record
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.rec.n.Add(int64(n))
	return n, err
}

func cmdSoak(args []string) error {
	fs := flag.NewFlagSet("soak", flag.ExitOnError)
	s := &soak{stats: map[string]*opStat{}}
	fs.StringVar(&s.proxy, "proxy", "", "proxy host:port (loopback)")
	fs.StringVar(&s.admin, "admin", "", "proxy admin host:port for /metrics")
	fs.StringVar(&s.events, "events", "", "the proxy's events file")
	fs.IntVar(&s.pid, "pid", 0, "the proxy's process id")
	fs.DurationVar(&s.dur, "d", 60*time.Second, "load duration")
	fs.IntVar(&s.conc, "c", 48, "concurrent clients")
	fs.IntVar(&s.maxConns, "max-conns", 500000, "stop after this many connections")
	fs.DurationVar(&s.sigtermAfter, "sigterm-after", 0, "phase 2: send SIGTERM to -pid this long into the load")
	fs.DurationVar(&s.exitWait, "exit-wait", 40*time.Second, "phase 2: how long the proxy may take to exit")
	fs.DurationVar(&s.drainWait, "drain-wait", 40*time.Second, "phase 1: how long open connections may take to close after the load")
	fs.StringVar(&s.mitmIP, "mitm-ip", "127.0.0.2", "backend address the proxy decrypts (its mitm.hosts)")
	cert := fs.String("cert", "", "backend certificate PEM (IP SANs 127.0.0.1 and -mitm-ip)")
	key := fs.String("key", "", "backend key PEM")
	ca := fs.String("ca", "", "CA PEM of the backend certificate")
	proxyCA := fs.String("proxy-ca", "", "the proxy's MITM CA PEM")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed")
	_ = fs.Parse(args)
	if !isLoopback(s.proxy) || (s.admin != "" && !isLoopback(s.admin)) || !isLoopback(s.mitmIP+":1") {
		return errors.New("-proxy, -admin and -mitm-ip must be 127.0.0.0/8 addresses")
	}
	if s.pid == 0 || s.events == "" || s.admin == "" {
		return errors.New("-pid, -events and -admin are required")
	}
	fmt.Printf("soak: seed %d, %d clients, %s%s\n", *seed, s.conc, s.dur, map[bool]string{true: fmt.Sprintf(", SIGTERM after %s", s.sigtermAfter), false: ""}[s.sigtermAfter > 0])

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return err
	}
	c1 := common{cas: *ca, name: "127.0.0.1"}
	if s.passCfg, err = c1.tlsConfig(); err != nil {
		return err
	}
	c2 := common{cas: *proxyCA, name: s.mitmIP}
	if s.mitmCfg, err = c2.tlsConfig(); err != nil {
		return err
	}
	s.okBody = make([]byte, 16<<10)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(s.okBody)
	if s.hello, err = clientHello(); err != nil {
		return err
	}
	stopServers, err := s.startServers(&pair)
	if err != nil {
		return err
	}
	defer stopServers()

	// Events already written (connections made before this program, such
	// as a script's port probes) count for the id check only.
	if err := s.waitDrained(10 * time.Second); err != nil {
		return err
	}
	if s.pre, err = countLines(s.events); err != nil {
		return err
	}
	// Warm up (probe cache, MITM leaf) and take the baseline.
	for _, b := range []string{"normal", "mitm-normal", "plain-http"} {
		s.runOne(rand.New(rand.NewPCG(*seed, 1)), behaviourByName(b)) //nolint:gosec
	}
	if err := s.waitDrained(10 * time.Second); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	base, err := s.snapshot()
	if err != nil {
		return err
	}
	fmt.Printf("soak: baseline goroutines %d, fds %d (sockets %d, pipes %d), threads %d\n", base.goroutines, base.fds, base.sockets, base.pipes, base.threads)

	// Load.
	start := time.Now()
	if s.sigtermAfter > 0 {
		go func() {
			time.Sleep(s.sigtermAfter)
			s.mu.Lock() // no record is half-made while the flag flips
			s.termFlag.Store(true)
			s.mu.Unlock()
			fmt.Printf("soak: SIGTERM to %d at %.1fs with %d connections made\n", s.pid, time.Since(start).Seconds(), s.count())
			_ = syscall.Kill(s.pid, syscall.SIGTERM)
			t0 := time.Now()
			for processAlive(s.pid) && time.Since(t0) < s.exitWait {
				time.Sleep(20 * time.Millisecond)
			}
			if !processAlive(s.pid) {
				fmt.Printf("soak: the proxy exited %.2fs after SIGTERM\n", time.Since(t0).Seconds())
			}
		}()
	}
	var peak snapshot
	peakDone := make(chan struct{})
	go func() { // watch the proxy's size during the load
		defer close(peakDone)
		for time.Since(start) < s.dur {
			if sn, err := s.snapshot(); err == nil {
				peak.goroutines = max(peak.goroutines, sn.goroutines)
				peak.fds = max(peak.fds, sn.fds)
				peak.open = max(peak.open, sn.open)
			}
			time.Sleep(time.Second)
		}
	}()
	var wg sync.WaitGroup
	for i := range s.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(*seed, uint64(i)+100)) //nolint:gosec // test data
			for time.Since(start) < s.dur && s.count() < s.maxConns {
				s.runOne(rng, pickBehaviour(rng))
			}
		}()
	}
	wg.Wait()
	<-peakDone
	fmt.Printf("soak: %d connections attempted in %.1fs; peak during load: goroutines %d, fds %d, open connections %d\n",
		s.count(), time.Since(start).Seconds(), peak.goroutines, peak.fds, peak.open)
	s.printStats()

	var fails []string
	for name, st := range s.stats {
		if st.wrong > 0 {
			fails = append(fails, fmt.Sprintf("%s: %d responses with wrong bytes", name, st.wrong))
		}
		if s.sigtermAfter == 0 && strict[name] && st.unexpected > 0 {
			fails = append(fails, fmt.Sprintf("%s: %d unexpected failures (first: %s)", name, st.unexpected, st.sample))
		}
	}

	if s.sigtermAfter > 0 {
		if !s.termFlag.Load() {
			return errors.New("the load ended before SIGTERM was sent: make -d longer than -sigterm-after")
		}
		t0 := time.Now()
		for processAlive(s.pid) {
			if time.Since(t0) > s.exitWait {
				fails = append(fails, fmt.Sprintf("proxy still running %s after SIGTERM", s.exitWait))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if time.Since(t0) > 100*time.Millisecond {
			fmt.Printf("soak: proxy exited %.1fs after the load ended\n", time.Since(t0).Seconds())
		}
		fails = append(fails, s.checkEvents(false)...)
	} else {
		if err := s.waitDrained(s.drainWait); err != nil {
			fails = append(fails, err.Error())
		}
		fails = append(fails, s.checkEvents(true)...)
		fails = append(fails, s.checkLeaks(base)...)
	}
	if len(fails) > 0 {
		for _, f := range fails {
			fmt.Println("soak: FAIL:", f)
		}
		return errors.New("soak FAILED")
	}
	fmt.Println("soak: PASS")
	return nil
}

func (s *soak) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

// ---- behaviours ----

type behaviour struct {
	name   string
	weight int
	run    func(s *soak, rng *rand.Rand, rec func(*net.TCPConn) *record) error
}

// strict behaviours must always succeed while the proxy runs normally.
var strict = map[string]bool{
	"normal": true, "mitm-normal": true, "echo-half-close": true, "tls-half-close": true,
	"plain-http": true, "closed-port-502": true, "hello-timeout-then-get": true, "server-half-close": true,
	"slow-download": true, "mitm-slow-download": true,
}

var behaviours = []behaviour{
	{"normal", 22, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, false, "/ok", nil) }},
	{"mitm-normal", 8, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, true, "/ok", nil) }},
	{"abort-mid-hello-fin", 6, func(s *soak, rng *rand.Rand, rec recFn) error { return s.partialHello(rng, rec, false, false) }},
	{"abort-mid-hello-rst", 6, func(s *soak, rng *rand.Rand, rec recFn) error { return s.partialHello(rng, rec, true, false) }},
	{"abort-after-serverhello-rst", 4, func(s *soak, rng *rand.Rand, rec recFn) error { return s.partialHello(rng, rec, true, true) }},
	{"client-rst-after-handshake", 6, func(s *soak, rng *rand.Rand, rec recFn) error { return s.clientRSTAfterHandshake(rng, rec, false) }},
	{"client-rst-mid-download", 5, func(s *soak, rng *rand.Rand, rec recFn) error { return s.clientRSTMidDownload(rng, rec, false) }},
	{"mitm-client-rst-mid-download", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.clientRSTMidDownload(rng, rec, true) }},
	{"mitm-client-rst-after-handshake", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.clientRSTAfterHandshake(rng, rec, true) }},
	{"server-rst-after-request", 6, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, false, "/rst", errAny) }},
	{"mitm-server-rst", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, true, "/rst", errAny) }},
	{"server-rst-on-accept", 5, func(s *soak, rng *rand.Rand, rec recFn) error { return s.serverRSTOnAccept(rec) }},
	{"echo-half-close", 7, func(s *soak, rng *rand.Rand, rec recFn) error { return s.echoHalfClose(rng, rec) }},
	{"tls-half-close", 4, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, false, "/ok", nil, halfClose) }},
	{"server-half-close", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, false, "/halfclose", nil) }},
	{"closed-port-502", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.closedPort(rec) }},
	{"garbage-request", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.garbage(rng, rec) }},
	{"connect-and-close", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.connectAndClose(rng, rec) }},
	{"close-before-connect-reply", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.closeBeforeReply(rng, rec) }},
	{"plain-http", 3, func(s *soak, rng *rand.Rand, rec recFn) error { return s.plainHTTP(rec) }},
	{"idle-then-get", 2, func(s *soak, rng *rand.Rand, rec recFn) error { return s.idleThenGet(rng, rec) }},
	{"hello-timeout-then-get", 1, func(s *soak, rng *rand.Rand, rec recFn) error { return s.helloTimeoutThenGet(rec) }},
	{"slow-download", 2, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, false, "/slow", nil) }},
	{"mitm-slow-download", 1, func(s *soak, rng *rand.Rand, rec recFn) error { return s.tlsGet(rec, true, "/slow", nil) }},
}

type recFn = func(*net.TCPConn) *record

var errAny = errors.New("any error is expected")

type getOpt int

const halfClose getOpt = 1

func behaviourByName(n string) behaviour {
	for _, b := range behaviours {
		if b.name == n {
			return b
		}
	}
	panic(n)
}

func pickBehaviour(rng *rand.Rand) behaviour {
	total := 0
	for _, b := range behaviours {
		total += b.weight
	}
	x := rng.IntN(total)
	for _, b := range behaviours {
		if x < b.weight {
			return b
		}
		x -= b.weight
	}
	return behaviours[0]
}

// runOne runs a behaviour and files its outcome. rec is called by the
// behaviour once its TCP connection to the proxy is made.
func (s *soak) runOne(rng *rand.Rand, b behaviour) {
	rec := func(c *net.TCPConn) *record {
		r := &record{addr: c.LocalAddr().String(), behaviour: b.name}
		s.mu.Lock()
		s.records = append(s.records, r)
		r.beforeTerm = s.sigtermAfter == 0 || !s.termSentLocked()
		s.mu.Unlock()
		return r
	}
	err := b.run(s, rng, rec)
	if errors.Is(err, syscall.ECONNREFUSED) {
		time.Sleep(20 * time.Millisecond) // the proxy has stopped (phase 2): do not spin
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats[b.name]
	if st == nil {
		st = &opStat{}
		s.stats[b.name] = st
	}
	st.n++
	if err != nil {
		if errors.Is(err, errWrongBytes) {
			st.wrong++
		}
		st.unexpected++
		if st.sample == "" {
			st.sample = err.Error()
		}
	}
}

// termSentLocked tells whether SIGTERM went out; s.mu held.
func (s *soak) termSentLocked() bool { return s.termFlag.Load() }

func (s *soak) printStats() {
	names := make([]string, 0, len(s.stats))
	for n := range s.stats {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Println("soak: behaviour                        count  unexpected  sample")
	for _, n := range names {
		st := s.stats[n]
		sample := st.sample
		if len(sample) > 90 {
			sample = sample[:90] + "…"
		}
		fmt.Printf("soak:   %-32s %5d  %10d  %s\n", n, st.n, st.unexpected, sample)
	}
}

const opTimeout = 8 * time.Second

// dialProxy makes the TCP connection to the proxy and records it.
func (s *soak) dialProxy(rec recFn) (*countConn, error) {
	c, err := net.DialTimeout("tcp", s.proxy, opTimeout)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetDeadline(time.Now().Add(opTimeout))
	return &countConn{TCPConn: tc, rec: rec(tc)}, nil
}

// connect dials the proxy and CONNECTs to target; the reader holds bytes
// past the response.
func (s *soak) connect(rec recFn, target string) (*countConn, net.Conn, error) {
	cc, err := s.dialProxy(rec)
	if err != nil {
		return nil, nil, err
	}
	if _, err := fmt.Fprintf(cc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		cc.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(cc, 512)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		cc.Close()
		return nil, nil, fmt.Errorf("CONNECT response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		cc.Close()
		return nil, nil, errStatus{resp.StatusCode}
	}
	return cc, &bufConn{Conn: cc, r: br}, nil
}

func (s *soak) tlsTarget(mitm bool) (string, *tls.Config) {
	if mitm {
		return net.JoinHostPort(s.mitmIP, strconv.Itoa(s.tlsPort)), s.mitmCfg
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort)), s.passCfg
}

// tlsConnect is CONNECT to the TLS server (through MITM or not) and a
// finished client handshake; raw is the counted TCP connection.
func (s *soak) tlsConnect(rec recFn, mitm bool) (raw *countConn, tc *tls.Conn, target string, err error) {
	target, cfg := s.tlsTarget(mitm)
	raw, c, err := s.connect(rec, target)
	if err != nil {
		return nil, nil, target, err
	}
	tc = tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, nil, target, fmt.Errorf("handshake: %w", err)
	}
	return raw, tc, target, nil
}

// tlsGet is CONNECT, handshake, GET path; want nil means a 200 with okBody.
func (s *soak) tlsGet(rec recFn, mitm bool, path string, want error, opts ...getOpt) error {
	target, cfg := s.tlsTarget(mitm)
	raw, c, err := s.connect(rec, target)
	if err != nil {
		return expect(want, err)
	}
	defer raw.Close()
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return expect(want, fmt.Errorf("handshake: %w", err))
	}
	if _, err := fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, target); err != nil {
		return expect(want, err)
	}
	if len(opts) > 0 && opts[0] == halfClose {
		if err := tc.CloseWrite(); err != nil {
			return expect(want, fmt.Errorf("close_notify: %w", err))
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return expect(want, fmt.Errorf("response: %w", err))
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return expect(want, fmt.Errorf("body: %w", err))
	}
	if want != nil {
		return nil // a reset upstream may also come back as a 502 (MITM)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if !bytes.Equal(body, s.okBody) {
		return fmt.Errorf("%w: body of %d bytes differs from the server's", errWrongBytes, len(body))
	}
	return tc.Close()
}

func expect(want, err error) error {
	if want != nil {
		return nil
	}
	return err
}

// partialHello sends part of a ClientHello (or all of it and reads a bit of
// the answer) and goes away with a FIN or an RST.
func (s *soak) partialHello(rng *rand.Rand, rec recFn, rst, readSome bool) error {
	target, _ := s.tlsTarget(rng.IntN(4) == 0)
	raw, c, err := s.connect(rec, target)
	if err != nil {
		return nil
	}
	n := 1 + rng.IntN(len(s.hello)-1)
	if readSome {
		n = len(s.hello)
	}
	_, _ = c.Write(s.hello[:n])
	if readSome {
		buf := make([]byte, 1+rng.IntN(200))
		_, _ = io.ReadAtLeast(c, buf, 1)
	} else if rng.IntN(2) == 0 {
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
	if rst {
		_ = raw.SetLinger(0)
	}
	return raw.Close()
}

func (s *soak) clientRSTAfterHandshake(rng *rand.Rand, rec recFn, mitm bool) error {
	raw, tc, target, err := s.tlsConnect(rec, mitm)
	if err != nil {
		return err
	}
	if rng.IntN(2) == 0 { // reset with a request in flight
		_, _ = fmt.Fprintf(tc, "GET /ok HTTP/1.1\r\nHost: %s\r\n\r\n", target)
	}
	_ = raw.SetLinger(0)
	return raw.Close()
}

func (s *soak) clientRSTMidDownload(rng *rand.Rand, rec recFn, mitm bool) error {
	raw, tc, target, err := s.tlsConnect(rec, mitm)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(tc, "GET /big HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
	_, _ = io.CopyN(io.Discard, tc, int64(1+rng.IntN(1<<20)))
	_ = raw.SetLinger(0)
	return raw.Close()
}

func (s *soak) serverRSTOnAccept(rec recFn) error {
	raw, c, err := s.connect(rec, s.rstAddr)
	if err != nil {
		return nil // the proxy may answer 502 if the reset beats its dial
	}
	defer raw.Close()
	_, _ = c.Write(s.hello)
	_, _ = io.Copy(io.Discard, c)
	return nil
}

// echoHalfClose sends random bytes, half-closes, and expects them back
// followed by the server's FIN.
func (s *soak) echoHalfClose(rng *rand.Rand, rec recFn) error {
	raw, c, err := s.connect(rec, s.echoAddr)
	if err != nil {
		return err
	}
	defer raw.Close()
	msg := make([]byte, 1+rng.IntN(200<<10))
	for i := range msg {
		msg[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = raw.CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if rerr != nil {
		return fmt.Errorf("read: %w", rerr)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("%w: echoed %d bytes, sent %d", errWrongBytes, len(got), len(msg))
	}
	return nil
}

func (s *soak) closedPort(rec recFn) error {
	_, _, err := s.connect(rec, s.closedAddr)
	var es errStatus
	if errors.As(err, &es) && es.code == http.StatusBadGateway {
		return nil
	}
	return fmt.Errorf("CONNECT to a closed port: want 502, got %w", err)
}

func (s *soak) garbage(rng *rand.Rand, rec recFn) error {
	cc, err := s.dialProxy(rec)
	if err != nil {
		return err
	}
	defer cc.Close()
	junk := make([]byte, 1+rng.IntN(3000))
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	if rng.IntN(2) == 0 {
		junk = append([]byte("GET /relative HTTP/1.1\r\nHost: x\r\n\r\n"), junk...)
	}
	_, _ = cc.Write(junk)
	_ = cc.CloseWrite()
	_, _ = io.Copy(io.Discard, cc)
	return nil
}

func (s *soak) connectAndClose(rng *rand.Rand, rec recFn) error {
	cc, err := s.dialProxy(rec)
	if err != nil {
		return err
	}
	if rng.IntN(2) == 0 {
		_ = cc.SetLinger(0)
	}
	return cc.Close()
}

func (s *soak) closeBeforeReply(rng *rand.Rand, rec recFn) error {
	cc, err := s.dialProxy(rec)
	if err != nil {
		return err
	}
	target, _ := s.tlsTarget(rng.IntN(3) == 0)
	_, _ = fmt.Fprintf(cc, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	if rng.IntN(2) == 0 {
		_, _ = cc.Write(s.hello)
	}
	if rng.IntN(2) == 0 {
		_ = cc.SetLinger(0)
	}
	return cc.Close()
}

func (s *soak) plainHTTP(rec recFn) error {
	cc, err := s.dialProxy(rec)
	if err != nil {
		return err
	}
	defer cc.Close()
	_, _ = fmt.Fprintf(cc, "GET http://%s/ok HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", s.httpAddr, s.httpAddr)
	resp, err := http.ReadResponse(bufio.NewReader(cc), nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if !bytes.Equal(body, s.okBody) {
		return fmt.Errorf("%w: plain HTTP body of %d bytes differs", errWrongBytes, len(body))
	}
	return nil
}

// idleThenGet holds a finished handshake quiet for up to 3 s, around the
// soak config's idle_timeout, so some tunnels end by the proxy's timer.
func (s *soak) idleThenGet(rng *rand.Rand, rec recFn) error {
	raw, tc, target, err := s.tlsConnect(rec, false)
	if err != nil {
		return err
	}
	defer raw.Close()
	time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
	_, _ = fmt.Fprintf(tc, "GET /ok HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
	_, _ = io.Copy(io.Discard, tc)
	return nil
}

// helloTimeoutThenGet waits past hello_timeout before the ClientHello; the
// tunnel must still work.
func (s *soak) helloTimeoutThenGet(rec recFn) error {
	target, cfg := s.tlsTarget(false)
	raw, c, err := s.connect(rec, target)
	if err != nil {
		return err
	}
	defer raw.Close()
	time.Sleep(1300 * time.Millisecond)
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	_, _ = fmt.Fprintf(tc, "GET /ok HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if !bytes.Equal(body, s.okBody) {
		return fmt.Errorf("%w: body differs", errWrongBytes)
	}
	return nil
}

// clientHello captures a real ClientHello record from crypto/tls.
func clientHello() ([]byte, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		tc := tls.Client(a, &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true}) //nolint:gosec // never completes
		_ = tc.Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

// ---- servers ----

func (s *soak) startServers(pair *tls.Certificate) (func(), error) {
	var lns []net.Listener
	var wg sync.WaitGroup
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
		wg.Wait()
	}
	listen := func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			lns = append(lns, l)
		}
		return l, err
	}
	serve := func(l net.Listener, h func(net.Conn)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				go h(c)
			}
		}()
	}
	tlsLn, err := listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.tlsPort = tlsLn.Addr().(*net.TCPAddr).Port
	mitmLn, err := listen(net.JoinHostPort(s.mitmIP, strconv.Itoa(s.tlsPort)))
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("backend on %s: %w", s.mitmIP, err)
	}
	srvCfg := &tls.Config{Certificates: []tls.Certificate{*pair}, NextProtos: []string{"http/1.1"}}
	serve(tlsLn, func(c net.Conn) { s.handleTLS(tls.Server(c, srvCfg)) })
	serve(mitmLn, func(c net.Conn) { s.handleTLS(tls.Server(c, srvCfg)) })

	rstLn, err := listen("127.0.0.1:0")
	if err != nil {
		closeAll()
		return nil, err
	}
	s.rstAddr = rstLn.Addr().String()
	serve(rstLn, func(c net.Conn) {
		time.Sleep(time.Duration(rand.IntN(5)) * time.Millisecond) //nolint:gosec
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})

	echoLn, err := listen("127.0.0.1:0")
	if err != nil {
		closeAll()
		return nil, err
	}
	s.echoAddr = echoLn.Addr().String()
	serve(echoLn, func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * opTimeout))
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})

	httpLn, err := listen("127.0.0.1:0")
	if err != nil {
		closeAll()
		return nil, err
	}
	s.httpAddr = httpLn.Addr().String()
	hs := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(s.okBody) }),
		ReadHeaderTimeout: opTimeout,
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = hs.Serve(httpLn) }()

	// A port nothing listens on: reserve it, then close it.
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		closeAll()
		return nil, err
	}
	s.closedAddr = cl.Addr().String()
	cl.Close()
	return func() { _ = hs.Close(); closeAll() }, nil
}

// handleTLS serves one backend TLS connection; the path picks the
// server's behaviour.
func (s *soak) handleTLS(tc *tls.Conn) {
	raw := tc.NetConn().(*net.TCPConn)
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(2 * opTimeout))
	if err := tc.Handshake(); err != nil {
		return
	}
	req, err := http.ReadRequest(bufio.NewReader(tc))
	if err != nil {
		return
	}
	switch req.URL.Path {
	case "/rst":
		_ = raw.SetLinger(0)
		_ = raw.Close()
	case "/big":
		_, _ = fmt.Fprintf(tc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", 64*len(s.okBody))
		for range 64 {
			if _, err := tc.Write(s.okBody); err != nil {
				return
			}
		}
	case "/slow": // about 4 s, longer than the soak's shutdown_grace, never idle
		_, _ = fmt.Fprintf(tc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(s.okBody))
		const parts = 16
		for i := range parts {
			time.Sleep(250 * time.Millisecond)
			if _, err := tc.Write(s.okBody[i*len(s.okBody)/parts : (i+1)*len(s.okBody)/parts]); err != nil {
				return
			}
		}
	case "/halfclose":
		_, _ = fmt.Fprintf(tc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(s.okBody))
		_, _ = tc.Write(s.okBody)
		_ = tc.CloseWrite()
		_, _ = io.Copy(io.Discard, tc)
	default:
		_, _ = fmt.Fprintf(tc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(s.okBody))
		_, _ = tc.Write(s.okBody)
	}
}

// ---- checks ----

type snapshot struct {
	goroutines, fds, sockets, pipes, threads int
	open, eventsTotal                        int
}

func (s *soak) snapshot() (snapshot, error) {
	var sn snapshot
	m, err := scrape(s.admin)
	if err != nil {
		return sn, err
	}
	sn.goroutines = int(m["go_goroutines"])
	sn.open = int(m["inspectproxy_open_connections"])
	sn.eventsTotal = int(m["inspectproxy_events_total"])
	st := treeStat(s.pid)
	sn.fds, sn.sockets, sn.pipes, sn.threads = st.fds, st.sockets, st.pipe, st.threads
	return sn, nil
}

// scrape reads /metrics and sums each metric over its labels.
func scrape(admin string) (map[string]float64, error) {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := cl.Get("http://" + admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out, sc.Err()
}

// waitDrained waits until the proxy has no open connection and has
// written an event for every connection made so far.
func (s *soak) waitDrained(limit time.Duration) error {
	t0 := time.Now()
	for {
		sn, err := s.snapshot()
		lines, _ := countLines(s.events)
		if err == nil && sn.open == 0 && lines >= s.pre+s.count() {
			return nil
		}
		if time.Since(t0) > limit {
			return fmt.Errorf("not drained after %s: open connections %d, events %d of %d connections (scrape error %v)", limit, sn.open, lines-s.pre, s.count(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func countLines(path string) (int, error) {
	b, err := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'}), err
}

func (s *soak) checkLeaks(base snapshot) []string {
	const slackG, slackFD = 3, 2
	t0 := time.Now()
	var sn snapshot
	var err error
	for {
		sn, err = s.snapshot()
		if err == nil && sn.goroutines <= base.goroutines+slackG && sn.sockets <= base.sockets+slackFD {
			break
		}
		if time.Since(t0) > 20*time.Second {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return []string{"admin scrape: " + err.Error()}
	}
	fmt.Printf("soak: after the load: goroutines %d (baseline %d), fds %d (baseline %d): sockets %d (baseline %d), pipes %d (baseline %d), threads %d\n",
		sn.goroutines, base.goroutines, sn.fds, base.fds, sn.sockets, base.sockets, sn.pipes, base.pipes, sn.threads)
	var fails []string
	if sn.goroutines > base.goroutines+slackG {
		fails = append(fails, fmt.Sprintf("goroutine leak: %d after the load, baseline %d", sn.goroutines, base.goroutines))
	}
	if sn.sockets > base.sockets+slackFD {
		fails = append(fails, fmt.Sprintf("socket fd leak: %d after the load, baseline %d", sn.sockets, base.sockets))
	}
	// Idle splice pipes sit in Go's sync.Pool until two GCs pass; they are
	// bounded by the concurrency, not by the number of connections.
	if sn.pipes > base.pipes+4*s.conc+8 {
		fails = append(fails, fmt.Sprintf("pipe fd leak: %d after the load, baseline %d, clients %d", sn.pipes, base.pipes, s.conc))
	}
	if sn.fds-sn.sockets-sn.pipes > base.fds-base.sockets-base.pipes+slackFD {
		fails = append(fails, fmt.Sprintf("other fd leak: %d non-socket non-pipe fds after, %d before", sn.fds-sn.sockets-sn.pipes, base.fds-base.sockets-base.pipes))
	}
	if sn.open != 0 {
		fails = append(fails, fmt.Sprintf("inspectproxy_open_connections is %d after the load", sn.open))
	}
	return fails
}

type evLine struct {
	ID     string `json:"id"`
	Client string `json:"client"`
	Kind   string `json:"kind"`
	Error  string `json:"error"`
	TCP    *struct {
		RST     string `json:"rst"`
		Timeout string `json:"timeout"`
	} `json:"tcp"`
}

// checkEvents compares the events file with the connections made. exact:
// every connection made has exactly one event (phase 1). Otherwise (phase
// 2, SIGTERM) a connection may have been left unaccepted in the listen
// backlog, but one the proxy answered must have its event, no event may be
// unknown or doubled, and the ids the proxy gave out must be contiguous.
func (s *soak) checkEvents(exact bool) []string {
	var fails []string
	b, err := os.ReadFile(s.events)
	if err != nil {
		return []string{err.Error()}
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		fails = append(fails, "the events file ends in a partial line")
	}
	byAddr := map[string]int{}
	ids := map[int]int{}
	maxID := 0
	kinds := map[string]int{}
	rsts := map[string]int{}
	timeouts := map[string]int{}
	bad := 0
	lines := bytes.Split(bytes.TrimSuffix(b, []byte{'\n'}), []byte{'\n'})
	if len(b) == 0 {
		lines = nil
	}
	for i, l := range lines {
		var ev evLine
		if err := json.Unmarshal(l, &ev); err != nil || ev.ID == "" {
			bad++
			if bad <= 3 {
				fails = append(fails, fmt.Sprintf("events line %d is not a complete event: %v", i+1, err))
			}
			continue
		}
		if i >= s.pre {
			byAddr[ev.Client]++
		}
		kinds[ev.Kind]++
		if ev.TCP != nil && ev.TCP.RST != "" {
			rsts[ev.TCP.RST]++
		}
		if ev.TCP != nil && ev.TCP.Timeout != "" {
			timeouts[ev.TCP.Timeout]++
		}
		j := strings.LastIndexByte(ev.ID, '-')
		n, err := strconv.Atoi(ev.ID[j+1:])
		if err != nil {
			fails = append(fails, "event id "+ev.ID+" has no sequence number")
			continue
		}
		ids[n]++
		maxID = max(maxID, n)
	}
	if bad > 3 {
		fails = append(fails, fmt.Sprintf("%d lines in all are not complete events", bad))
	}
	dupIDs, missingIDs := 0, 0
	for n := 1; n <= maxID; n++ {
		switch c := ids[n]; {
		case c == 0:
			missingIDs++
		case c > 1:
			dupIDs++
		}
	}
	made := map[string]int{}
	answered := map[string]int{}
	afterTerm := 0
	s.mu.Lock()
	total := len(s.records)
	for _, r := range s.records {
		if !r.beforeTerm {
			afterTerm++
		}
		made[r.addr]++
		if r.n.Load() > 0 {
			answered[r.addr]++
		}
	}
	s.mu.Unlock()
	extra, lostAnswered, unaccounted := 0, 0, 0
	for a, n := range byAddr {
		if n > made[a] {
			extra += n - made[a]
		}
	}
	for a, n := range made {
		got := byAddr[a]
		if got < answered[a] {
			lostAnswered += answered[a] - got
		}
		if got < n {
			unaccounted += n - got
		}
	}
	nAnswered := 0
	for _, n := range answered {
		nAnswered += n
	}
	fmt.Printf("soak: %d connections made (%d got an answer), %d events (%d before the soak; %v), ids 1..%d, rst by %v, timeouts %v\n",
		total, nAnswered, len(lines)-bad, s.pre, kinds, maxID, rsts, timeouts)
	if missingIDs > 0 || dupIDs > 0 {
		fails = append(fails, fmt.Sprintf("event ids: %d missing and %d doubled in 1..%d (one id per accepted connection)", missingIDs, dupIDs, maxID))
	}
	if maxID != len(lines)-bad {
		fails = append(fails, fmt.Sprintf("%d events but the proxy accepted %d connections (highest id)", len(lines)-bad, maxID))
	}
	if extra > 0 {
		fails = append(fails, fmt.Sprintf("%d events for client addresses with no (or fewer) connections", extra))
	}
	if lostAnswered > 0 {
		fails = append(fails, fmt.Sprintf("LOST EVENTS: %d connections the proxy answered have no event", lostAnswered))
	}
	if exact {
		if unaccounted > 0 || len(lines)-bad-s.pre != total {
			fails = append(fails, fmt.Sprintf("%d events for %d connections: %d connections without an event", len(lines)-bad-s.pre, total, unaccounted))
		}
	} else {
		fmt.Printf("soak: %d connections made after SIGTERM; %d connections made got no answer and no event (left in the listen backlog when the proxy closed it)\n", afterTerm, unaccounted)
	}
	return fails
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}
