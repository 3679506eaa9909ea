package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/access"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/onboard"
	"github.com/inspectproxy/inspectproxy/stream"
	"github.com/inspectproxy/inspectproxy/wireguard"
)

// defaultWireGuardPort is the port written into device configs while
// wireguard.listen is unset (WireGuard's usual port).
const defaultWireGuardPort = "51820"

// wgSetup is what the peer commands and serve derive from the config.
type wgSetup struct {
	cfg               config.WireGuard
	store             *wireguard.Store
	network, network6 netip.Prefix
	// bound holds the listen address once serve's server has bound it
	// (the port of a listen port of 0 is known only then); empty before,
	// and in the peer commands.
	bound *atomic.Pointer[string]
}

func newWGSetup(cfg config.Config) wgSetup {
	s := wgSetup{cfg: cfg.WireGuard, store: wireguard.NewStore(filepath.Join(cfg.MITM.DataDir, "wireguard")), bound: new(atomic.Pointer[string])}
	s.network = netip.MustParsePrefix(s.cfg.Network) // Validate checked both
	if s.cfg.Network6 != "" {
		s.network6 = netip.MustParsePrefix(s.cfg.Network6)
	}
	return s
}

// endpoint is the host:port device configs connect to.
func (s wgSetup) endpoint() (string, error) {
	host, port := "0.0.0.0", defaultWireGuardPort
	listen := s.cfg.Listen
	if s.bound != nil {
		if b := s.bound.Load(); b != nil {
			listen = *b
		}
	}
	if listen != "" {
		h, p, _ := net.SplitHostPort(listen)
		port = p
		if h != "" {
			host = h // devices reach a server bound to one address there
		}
	}
	if port == "0" {
		return "", fmt.Errorf("wireguard: wireguard.listen %q has port 0, and the server has not bound its port yet", listen)
	}
	if s.cfg.Endpoint == "" {
		listen := net.JoinHostPort(host, port)
		if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
			return listen, nil // only a client on this machine reaches it
		}
		lan, err := onboard.LANAddrs(listen)
		if err != nil {
			return "", err
		}
		if len(lan) == 0 {
			return "", fmt.Errorf("wireguard: no LAN address to reach wireguard.listen %q from a device; set wireguard.endpoint (--endpoint) to the host devices connect to", listen)
		}
		return lan[0], nil
	}
	if _, _, err := net.SplitHostPort(s.cfg.Endpoint); err == nil {
		return s.cfg.Endpoint, nil
	}
	return net.JoinHostPort(s.cfg.Endpoint, port), nil
}

// config is a peer's wg-quick config text.
func (s wgSetup) config(p wireguard.Peer) (string, error) {
	key, err := s.store.ServerKey()
	if err != nil {
		return "", err
	}
	endpoint, err := s.endpoint()
	if err != nil {
		return "", err
	}
	return wireguard.ClientConfig(p, key, endpoint, wireguard.DNSAddrs(s.network, s.network6), s.cfg.MTU), nil
}

// printPeer writes a peer's config, then its QR code unless noQR.
func (s wgSetup) printPeer(w io.Writer, p wireguard.Peer, noQR bool) error {
	text, err := s.config(p)
	if err != nil {
		return err
	}
	fmt.Fprint(w, text)
	if noQR {
		return nil
	}
	qr, err := wireguard.QR(text)
	if err != nil {
		return err
	}
	fmt.Fprint(w, "\n"+qr)
	return nil
}

func newWireGuard(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{Use: "wireguard", Short: "Manage the devices (peers) of the WireGuard mode"}
	peer := &cobra.Command{Use: "peer", Short: "Add, list, show or remove a device"}
	root.AddCommand(peer)
	v := viper.New()
	pf := root.PersistentFlags()
	file := pf.String("config", "", "YAML config file")
	pf.String("data-dir", "", "directory whose wireguard/ subdirectory holds the keys (default $HOME/.inspectproxy)")
	pf.String("endpoint", "", "host[:port] devices connect to (default: this machine's first LAN IPv4 address)")
	for flag, key := range map[string]string{"data-dir": "mitm.data_dir", "endpoint": "wireguard.endpoint"} {
		_ = v.BindPFlag(key, pf.Lookup(flag))
	}
	setup := func() (wgSetup, error) {
		cfg, err := config.Load(v, *file)
		if err != nil {
			return wgSetup{}, err
		}
		return newWGSetup(cfg), nil
	}
	// cmd is a peer subcommand that runs with the configuration loaded.
	cmd := func(use, short string, args cobra.PositionalArgs, run func(wgSetup, []string) error) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: args, RunE: func(_ *cobra.Command, a []string) error {
			s, err := setup()
			if err != nil {
				return err
			}
			return run(s, a)
		}}
	}
	var noQR bool
	add := cmd("add NAME", "Add a device: print its WireGuard config and a QR code to scan with the WireGuard app", cobra.ExactArgs(1),
		func(s wgSetup, args []string) error {
			p, err := s.store.AddPeer(args[0], s.network, s.network6)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "added peer %q (%s); in the WireGuard app: + → Create from QR code, or import the text below\n", p.Name, p.Addresses[0])
			return s.printPeer(stdout, p, noQR)
		})
	show := cmd("show NAME", "Print a device's WireGuard config and QR code again", cobra.ExactArgs(1),
		func(s wgSetup, args []string) error {
			p, err := s.store.Peer(args[0])
			if err != nil {
				return err
			}
			return s.printPeer(stdout, p, noQR)
		})
	for _, c := range []*cobra.Command{add, show} {
		c.Flags().BoolVar(&noQR, "no-qr", false, "print the config text only")
	}
	list := cmd("list", "List the devices", cobra.NoArgs, func(s wgSetup, _ []string) error {
		peers, err := s.store.Peers()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tADDRESSES\tPUBLIC KEY\tADDED")
		for _, p := range peers {
			addrs := make([]string, len(p.Addresses))
			for i, a := range p.Addresses {
				addrs[i] = a.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, strings.Join(addrs, ", "), p.PublicKey, p.Created.Format("2006-01-02 15:04:05Z"))
		}
		return tw.Flush()
	})
	remove := cmd("remove NAME", "Remove a device; it can no longer connect", cobra.ExactArgs(1), func(s wgSetup, args []string) error {
		return s.store.RemovePeer(args[0])
	})
	peer.AddCommand(add, list, show, remove)
	return root
}

// consoleSetup is the live console's /setup/: the phone setup page and,
// with the WireGuard mode on, the devices' configs and QR codes at
// /setup/wireguard/. Those hold the devices' private keys, so they are on
// the console only (its token and client rules), never on the setup page
// the proxy serves its clients.
func consoleSetup(wg *wgSetup, page *onboard.Handler) http.Handler {
	if wg == nil {
		if page == nil {
			return nil
		}
		return page
	}
	mux := http.NewServeMux()
	mux.Handle("/wireguard/", wireguard.SetupHandler(wg.store, wg.config))
	if page != nil {
		mux.Handle("/", page)
	}
	return mux
}

// startWireGuard runs the WireGuard server beside the proxy when
// wireguard.listen is set; handle is the pipeline's stream handler, which
// checks TCP destinations. UDP destinations are checked here by the same
// access rules, with the WireGuard port as the proxy's own. wait blocks
// until the server has stopped (after ctx ends) and every flow's event is
// written.
func startWireGuard(ctx context.Context, cfg config.Config, wg *wgSetup, log *zap.Logger, emit func(*event.Event),
	handle func(context.Context, *stream.Stream)) (wait func() error, err error) {
	if wg == nil {
		return func() error { return nil }, nil
	}
	udpPolicy, err := access.New(cfg.Access)
	if err != nil {
		return nil, err
	}
	w := cfg.WireGuard
	srv, err := wireguard.New(wireguard.Options{
		Listen: w.Listen, Store: wg.store, Network: wg.network, Network6: wg.network6, MTU: w.MTU, QUIC: w.QUIC,
		MaxConnections: w.MaxConnections, MaxConnectionsPerPeer: w.MaxConnectionsPerPeer,
		UDPIdleTimeout: w.UDPIdleTimeout, LookupTimeout: cfg.Limits.DialTimeout, ShutdownGrace: cfg.Limits.ShutdownGrace,
		Handler: handle, Emit: emit, Log: log.Named("wireguard"),
		CheckDestination: func(client netip.Addr, dst netip.AddrPort) error {
			return udpPolicy.Destination("udp", netip.AddrPortFrom(client, 0), dst)
		},
	})
	if err != nil {
		return nil, err
	}
	udpPolicy.AddSelf(&net.UDPAddr{Port: int(srv.Port())})
	peers, err := wg.store.Peers()
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(w.Listen) // Validate checked it
	bound := net.JoinHostPort(host, strconv.Itoa(int(srv.Port())))
	wg.bound.Store(&bound) // the console's device pages see it too
	endpoint, err := wg.endpoint()
	if err != nil {
		endpoint = err.Error()
	}
	log.Info("WireGuard listening", zap.String("udp", bound),
		zap.String("endpoint", endpoint), zap.Stringer("public_key", srv.PublicKey()), zap.Int("peers", len(peers)), zap.String("quic", w.QUIC),
		zap.String("devices", "/setup/wireguard/ on the live console"))
	if len(peers) == 0 {
		log.Info("no WireGuard devices yet; add one with: inspectproxy wireguard peer add phone")
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	return func() error { return <-done }, nil
}
