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

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(ctx, stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "inspectproxy:", err)
		return 1
	}
	return 0
}

func newRoot(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	serve := newServe(stderr, nil)
	root := &cobra.Command{
		Use:           "inspectproxy",
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
	root.AddCommand(extraCommands(stdout, stderr)...)
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
	f.StringSlice("allow-clients", nil, "client networks allowed, CIDR (required to listen beyond loopback, or use proxy auth)")
	f.Bool("mitm", false, "decrypt every tunnel with the proxy's CA (create it with: inspectproxy ca init)")
	f.String("ats-plist", "", "an app's Info.plist whose NSAppTransportSecurity is evaluated too")
	f.String("admin", "", "admin listener for /metrics and /healthz (off by default)")
	f.String("otlp", "", "export each connection as an OpenTelemetry trace to this OTLP receiver, e.g. http://127.0.0.1:4318 (more keys under otlp: in the config)")
	for flag, key := range map[string]string{
		"listen": "listen", "events": "events", "log-format": "log.format", "log-level": "log.level",
		"allow-clients": "access.allow_clients", "mitm": "mitm.enabled", "ats-plist": "ats.plist", "admin": "admin.listen",
		"otlp": "otlp.endpoint",
	} {
		_ = v.BindPFlag(key, f.Lookup(flag))
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
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

// serveProxy opens the events file, builds the proxy and its optional
// parts, and runs until ctx ends.
func serveProxy(ctx context.Context, cfg config.Config, log *zap.Logger, ready func(net.Addr)) error {
	out, closeOut, err := openEvents(cfg.Events)
	if err != nil {
		return err
	}
	w := event.NewWriter(out)
	opts := proxy.Options{Log: log, Sink: w}
	stop, err := addOptional(ctx, cfg, log, &opts)
	if err != nil {
		return err
	}
	defer stop()
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		return err
	}
	runErr := srv.Run(ctx, func(a net.Addr) {
		if ready != nil {
			ready(a)
		}
	})
	return errors.Join(runErr, w.Flush(), closeOut())
}

func openEvents(path string) (io.Writer, func() error, error) {
	if path == "-" {
		return os.Stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("events file: %w", err)
	}
	return f, f.Close, nil
}
