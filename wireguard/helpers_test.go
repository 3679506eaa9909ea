package wireguard

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/internal/testdns"
	"github.com/inspectproxy/inspectproxy/internal/testtool"
	"github.com/inspectproxy/inspectproxy/proxy"
	"github.com/inspectproxy/inspectproxy/stream"
)

// The tests run in a network namespace of their own (TestMain re-runs the
// test binary in one) whose loopback holds 198.18.0.0/24 (RFC 2544's
// benchmarking range): a device in the tunnel connects to addresses that
// are not loopback, as a phone does, and yet nothing can leave the
// machine, since the namespace has no other interface.
const netnsEnv = "INSPECTPROXY_WIREGUARD_NETNS"

// upstreamNet is where the tests' servers listen.
var upstreamNet = netip.MustParsePrefix("198.18.0.0/24")

func TestMain(m *testing.M) {
	if os.Getenv(netnsEnv) == "" {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "wireguard tests need a network namespace of their own (run as root): %v\n", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", upstreamNet.String(), "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "ip %s: %v\n%s", strings.Join(args, " "), err, out)
			os.Exit(2)
		}
	}
	// The proxy's reset watcher lives as long as the process.
	goleak.VerifyTestMain(m, testtool.IgnoreRSTWatch)
}

// upstream is the n-th address of upstreamNet.
func upstream(n int) netip.Addr {
	a, _ := nthHost(upstreamNet, n)
	return a
}

// sink collects events.
type sink struct {
	mu     sync.Mutex
	events []*event.Event
	added  chan struct{}
}

func newSink() *sink { return &sink{added: make(chan struct{}, 1)} }

// Write is emit as the proxy's Sink.
func (s *sink) Write(e *event.Event) error {
	s.emit(e)
	return nil
}

func (s *sink) emit(e *event.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	select {
	case s.added <- struct{}{}:
	default:
	}
}

// wait returns the first event matching ok, waiting up to 10s for it.
func (s *sink) wait(t testing.TB, what string, ok func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		for _, e := range s.events {
			if ok(e) {
				s.mu.Unlock()
				return e
			}
		}
		s.mu.Unlock()
		select {
		case <-s.added:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %s event; have %d events", what, s.count())
		}
	}
}

// waitCount waits up to 30s for n events.
func (s *sink) waitCount(t testing.TB, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); s.count() < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d events, want %d", s.count(), n)
		}
	}
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// testEnv is a server, its store and its events.
type testEnv struct {
	srv    *Server
	store  *Store
	events *sink
	stop   func()
}

// testServer starts a server on loopback with one peer, "phone"; tweak
// adjusts its options.
func testServer(t testing.TB, tweak func(*Options)) *testEnv {
	t.Helper()
	env := &testEnv{store: NewStore(t.TempDir()), events: newSink()}
	dns := testdns.Start(t, map[string][]netip.Addr{
		"api.example.test": {upstream(1)},
		"v6only.test":      {netip.MustParseAddr("2001:db8::1")},
	})
	opts := Options{
		Listen:         "127.0.0.1:0",
		Store:          env.store,
		Network:        netip.MustParsePrefix("10.64.0.0/24"),
		Emit:           env.events.emit,
		Resolver:       dns.Resolver(),
		UDPIdleTimeout: 500 * time.Millisecond,
		ShutdownGrace:  2 * time.Second,
	}
	opts.Handler = pipeline(t, env.events)
	if tweak != nil {
		tweak(&opts)
	}
	if _, err := env.store.AddPeer("phone", opts.Network, opts.Network6); err != nil {
		t.Fatal(err)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	env.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	env.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Cleanup(env.stop)
	return env
}

// pipeline is the proxy's stream pipeline with default settings (no
// certificate probes), writing to events.
func pipeline(t testing.TB, events *sink) func(context.Context, *stream.Stream) {
	cfg := config.Default()
	cfg.TLS.Probe = false
	srv, err := proxy.New(cfg, proxy.Options{Log: zap.NewNop(), Sink: events})
	if err != nil {
		t.Fatal(err)
	}
	return func(_ context.Context, st *stream.Stream) { srv.ServeStream(st) }
}

// config is the named peer's client config, as `peer add` prints it.
func (e *testEnv) config(t testing.TB, name string) string {
	t.Helper()
	p, err := e.store.Peer(name)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(e.srv.opts.Listen)
	if host == "" {
		host = "127.0.0.1"
	}
	endpoint := net.JoinHostPort(host, strconv.Itoa(int(e.srv.Port())))
	return ClientConfig(p, mustServerKey(t, e.store), endpoint, DNSAddrs(e.srv.opts.Network, e.srv.opts.Network6), 1420)
}

func mustServerKey(t testing.TB, s *Store) Key {
	k, err := s.ServerKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// client is a WireGuard device: wireguard-go on its own userspace stack,
// configured from the wg-quick text a phone would import.
type client struct {
	*netstack.Net
	addr netip.Addr
	dev  *device.Device
}

func newClient(t testing.TB, config string) *client {
	t.Helper()
	var (
		addrs, dns []netip.Addr
		mtu        = 1420
		uapi       strings.Builder
	)
	sc := bufio.NewScanner(strings.NewReader(config))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " = ")
		if !ok {
			continue
		}
		switch k {
		case "PrivateKey":
			fmt.Fprintf(&uapi, "private_key=%s\n", b64hex(t, v))
		case "Address":
			for _, p := range strings.Split(v, ", ") {
				addrs = append(addrs, netip.MustParsePrefix(p).Addr())
			}
		case "DNS":
			for _, a := range strings.Split(v, ", ") {
				dns = append(dns, netip.MustParseAddr(a))
			}
		case "MTU":
			fmt.Sscan(v, &mtu)
		case "PublicKey":
			fmt.Fprintf(&uapi, "public_key=%s\n", b64hex(t, v))
		case "Endpoint":
			fmt.Fprintf(&uapi, "endpoint=%s\n", v)
		case "AllowedIPs":
			for _, p := range strings.Split(v, ", ") {
				fmt.Fprintf(&uapi, "allowed_ip=%s\n", p)
			}
		case "PersistentKeepalive":
			fmt.Fprintf(&uapi, "persistent_keepalive_interval=%s\n", v)
		default:
			t.Fatalf("config key %q unknown to the test client", k)
		}
	}
	tdev, tnet, err := netstack.CreateNetTUN(addrs, dns, mtu)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	if err := dev.IpcSet(uapi.String()); err != nil {
		t.Fatalf("client config: %v\n%s", err, config)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	c := &client{Net: tnet, addr: addrs[0], dev: dev}
	t.Cleanup(dev.Close)
	return c
}

func b64hex(t testing.TB, s string) string {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
