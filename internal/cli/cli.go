// Package cli is inspectproxy's command line: flags and subcommands, each a
// thin layer over a package that does the work.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/eventlog"
	"github.com/inspectproxy/inspectproxy/proxy"
	"github.com/inspectproxy/inspectproxy/stream"
)

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return MainIO(ctx, args, os.Stdin, stdout, stderr)
}

// MainIO is Main with standard input given, which "report -" reads.
func MainIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(ctx, stdin, stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "inspectproxy:", err)
		return 1
	}
	return 0
}

func newRoot(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	serve := newServe(stderr, nil)
	root := &cobra.Command{
		Use:           "inspectproxy",
		Version:       version(),
		Short:         "A forwarding proxy that shows how HTTPS is layered on TCP, connection by connection",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          serve.RunE,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.Flags().AddFlagSet(serve.Flags())
	root.AddCommand(serve)
	root.AddCommand(extraCommands(stdin, stdout, stderr)...)
	return root
}

// newServe is `inspectproxy serve`; ready, when set, is told the address
// (tests use it).
func newServe(stderr io.Writer, ready func(net.Addr)) *cobra.Command {
	v := viper.New()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy (the default command)",
		Args:  cobra.NoArgs,
	}
	f := cmd.Flags()
	file := f.String("config", "", "YAML config file (see configs/inspectproxy.yaml)")
	f.String("listen", "", "listen address (default 127.0.0.1:8080)")
	f.String("events", "", `events file, JSON lines, "-" for stdout (default inspect-events.jsonl)`)
	f.String("log-format", "", "console or json (default console)")
	f.String("log-level", "", "debug, info, warn or error (default info)")
	f.StringSlice("allow-clients", nil, "client networks allowed, CIDR (clients on this host always are; required to listen beyond loopback, or use proxy auth)")
	f.Bool("mitm", false, "decrypt every tunnel with the proxy's CA (create it with: inspectproxy ca init)")
	f.String("ats-plist", "", "an app's Info.plist whose NSAppTransportSecurity is evaluated too")
	f.String("admin", "", "admin listener for /metrics and /healthz (off by default)")
	f.String("keylog", "", "with MITM: append both legs' TLS secrets to this file (NSS key log, for Wireshark; default $SSLKEYLOGFILE)")
	f.String("ui", "", `live web console address (default 127.0.0.1:8081; "" switches it off)`)
	f.StringSlice("pac-direct", nil, "host patterns the PAC file sends DIRECT, e.g. '*.apple.com'")
	f.StringSlice("extra-roots", nil, "PEM files of root CAs trusted besides the system's (a private CA), for chain verification and ATS")
	f.StringSlice("ignore-hosts", nil, `hosts never recorded, globs ("*.apple.com"); they are still proxied`)
	f.StringSlice("only-hosts", nil, "record only connections to hosts matching these globs")
	proxyAuth := f.String("proxy-auth", "", "USER:PASSWORD for proxy Basic auth (access.username/password; visible in ps: prefer the config file or INSPECTPROXY_ACCESS_PASSWORD)")
	f.String("socks", "", "SOCKS5 listener address, e.g. 127.0.0.1:1080 (off by default; same access rules as --listen)")
	f.Bool("allow-local-destinations", false, "let clients on other hosts reach this host's own addresses (loopback, link-local, its interfaces)")
	f.String("otlp", "", "export each connection as an OpenTelemetry trace to this OTLP receiver, e.g. http://127.0.0.1:4318 (more keys under otlp: in the config)")
	f.String("wireguard", "", `WireGuard mode: capture whole devices on this UDP address, e.g. ":51820" (add devices with: inspectproxy wireguard peer add NAME)`)
	f.String("wireguard-quic", "", "WireGuard mode, UDP 443: refuse (ICMP unreachable, apps fall back to TCP) or pass (default refuse)")
	for flag, key := range map[string]string{
		"listen": "listen", "events": "events.path", "log-format": "log.format", "log-level": "log.level",
		"allow-clients": "access.allow_clients", "mitm": "mitm.enabled", "ats-plist": "ats.plist", "admin": "admin.listen", "keylog": "mitm.keylog",
		"ui": "ui.listen", "pac-direct": "onboard.pac_direct",
		"extra-roots": "tls.extra_roots", "ignore-hosts": "capture.ignore_hosts", "only-hosts": "capture.only_hosts",
		"socks": "socks.listen", "allow-local-destinations": "access.allow_local_destinations",
		"otlp":      "otlp.endpoint",
		"wireguard": "wireguard.listen", "wireguard-quic": "wireguard.quic",
	} {
		_ = v.BindPFlag(key, f.Lookup(flag))
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *proxyAuth != "" {
			user, pass, ok := strings.Cut(*proxyAuth, ":")
			if !ok || user == "" || pass == "" {
				return fmt.Errorf("--proxy-auth: want USER:PASSWORD, both non-empty")
			}
			v.Set("access.username", user)
			v.Set("access.password", pass)
		}
		cfg, err := config.Load(v, *file)
		if err != nil {
			return err
		}
		log, err := NewLogger(cfg.Log, stderr)
		if err != nil {
			return err
		}
		defer func() { _ = log.Sync() }()
		return serveProxy(cmd.Context(), cfg, log, ready)
	}
	return cmd
}

// NewLogger builds the zap logger: console (human) or JSON, on w.
func NewLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if c.Format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

// serveProxy binds the listeners, then opens the events file (a port in
// use leaves no file behind), builds the proxy and its optional parts, and
// runs until ctx ends. Losing events does not make it fail: the sink's
// counters and log say what was lost.
func serveProxy(ctx context.Context, cfg config.Config, log *zap.Logger, ready func(net.Addr)) error {
	ln, err := proxy.Listen(ctx, cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", cfg.Listen, err)
	}
	defer ln.Close() // Serve closes it too; this is for the error paths
	var opts proxy.Options
	if cfg.Socks.Listen != "" {
		sl, err := proxy.Listen(ctx, cfg.Socks.Listen)
		if err != nil {
			return fmt.Errorf("--socks (socks.listen) %s: %w", cfg.Socks.Listen, err)
		}
		defer sl.Close()
		opts.SOCKS = sl
	}
	opt, err := addOptional(cfg, log, &opts)
	defer func() { _ = opt.close() }()
	if err != nil {
		return err
	}
	sink, err := eventlog.Open(cfg.Events, cfg.Limits.MaxEventBytes, log.Named("events"))
	if err != nil {
		return err
	}
	defer closeEvents(sink, cfg.Events.CloseTimeout, log)
	opts.Log, opts.Sink = log, sink
	// One WireGuard setup for the server and the console's device pages.
	var wg *wgSetup
	if cfg.WireGuard.Listen != "" {
		s := newWGSetup(cfg)
		wg = &s
	}
	u, err := startUI(ctx, cfg, wg, log, opt.ca, opt.app, &opts)
	if err != nil {
		return err
	}
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		return err
	}
	u.srv.Store(srv)
	if m := opt.metrics; m != nil {
		m.WatchEvents(sink)
		go func() {
			if err := m.Serve(ctx, opt.admin, log.Named("admin")); err != nil {
				log.Error("admin listener", zap.Error(err))
			}
		}()
	}
	defer reopenOnHUP(sink, log)()
	waitWG, err := startWireGuard(ctx, cfg, wg, log, srv.Emit,
		func(_ context.Context, st *stream.Stream) { srv.ServeStream(st) })
	if err != nil {
		return err
	}
	// Both stop when ctx ends; the events file closes after both.
	return errors.Join(srv.Serve(ctx, ln, func(a net.Addr) {
		u.announce(log, a)
		if ready != nil {
			ready(a)
		}
	}), waitWG())
}

// reopenWait bounds a reopen: a writer stalled on the disk must not hold
// later SIGHUPs.
const reopenWait = 10 * time.Second

// reopenOnHUP reopens the events file on each SIGHUP, which logrotate
// sends after renaming it. The returned func stops that.
func reopenOnHUP(s *eventlog.Sink, log *zap.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-hup:
				ctx, cancel := context.WithTimeout(context.Background(), reopenWait)
				if err := s.Reopen(ctx); err != nil {
					log.Error("SIGHUP: events file not reopened", zap.Error(err))
				}
				cancel()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-exited
	}
}

// closeEvents writes what is queued and logs the sink's counters; losses
// are logged, not returned, so the exit status stays 0.
func closeEvents(s *eventlog.Sink, timeout time.Duration, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := s.Close(ctx)
	st := s.Stats()
	fields := []zap.Field{zap.Int64("written", st.Written), zap.Int64("gap_records", st.Gaps)}
	for _, r := range eventlog.Reasons {
		if n := st.Dropped[r]; n > 0 {
			fields = append(fields, zap.Int64("dropped_"+r, n))
		}
	}
	if err != nil {
		log.Error("events file closed with losses", append(fields, zap.Error(err))...)
		return
	}
	log.Info("events file closed", fields...)
}
