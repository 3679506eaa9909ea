package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/ca"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/metrics"
	"github.com/inspectproxy/inspectproxy/otelexport"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// extraCommands are the report, ats and ca commands.
func extraCommands(stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{newCA(stdout, stderr), newATS(stdout), newReport(stdout, stderr)}
}

// dataDir resolves the CA directory the way serve does: flag, then
// config file and environment, then the default.
func dataDir(v *viper.Viper, file string) (string, error) {
	cfg, err := config.Load(v, file)
	if err != nil {
		return "", err
	}
	return cfg.MITM.DataDir, nil
}

func newCA(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{Use: "ca", Short: "Manage the CA used by MITM mode"}
	v := viper.New()
	pf := root.PersistentFlags()
	file := pf.String("config", "", "YAML config file")
	pf.String("data-dir", "", "directory holding ca.pem and ca-key.pem (default $HOME/.inspectproxy)")
	_ = v.BindPFlag("mitm.data_dir", pf.Lookup("data-dir"))

	var force bool
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the CA (ECDSA P-256; the key file is mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dataDir(v, *file)
			if err != nil {
				return err
			}
			c, err := ca.Init(dir, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "created %s in %s\nSHA-256 fingerprint %s\ninstall it on a device with: inspectproxy ca export > inspectproxy-ca.pem\n", c, dir, c.Fingerprint())
			return nil
		},
	}
	initCmd.Flags().BoolVar(&force, "force", false, "replace an existing CA (devices trusting the old one must be updated)")

	var der bool
	export := &cobra.Command{
		Use:   "export",
		Short: "Print the CA certificate (PEM, or DER with --der) for installing on a device",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dataDir(v, *file)
			if err != nil {
				return err
			}
			c, err := ca.Load(dir)
			if err != nil {
				return err
			}
			if der {
				return c.WriteDER(stdout)
			}
			return c.WritePEM(stdout)
		},
	}
	export.Flags().BoolVar(&der, "der", false, "DER instead of PEM (what iOS and Android install from a download)")
	root.AddCommand(initCmd, export)
	return root
}

// otlpShutdown is how long queued spans get to reach the collector when
// the proxy stops.
const otlpShutdown = 5 * time.Second

// addOptional wires the ATS checker, MITM, metrics and OTLP export when
// configured. stop flushes the export; call it once the proxy has stopped.
func addOptional(ctx context.Context, cfg config.Config, log *zap.Logger, o *proxy.Options) (stop func(), err error) {
	stop = func() {}
	checker, err := atsChecker(cfg.ATS)
	if err != nil {
		return stop, err
	}
	o.Checker = checker
	if cfg.MITM.Enabled || len(cfg.MITM.Hosts) > 0 {
		c, err := ca.Load(cfg.MITM.DataDir)
		if err != nil {
			return stop, fmt.Errorf("mitm: %w (create one with `inspectproxy ca init`)", err)
		}
		iss, err := ca.NewIssuer(c, ca.IssuerOptions{})
		if err != nil {
			return stop, fmt.Errorf("mitm: %w", err)
		}
		o.MITM = iss
		log.Info("MITM on", zap.Bool("all_hosts", cfg.MITM.Enabled), zap.Strings("hosts", cfg.MITM.Hosts), zap.String("ca", c.Fingerprint()))
	}
	var obs observers
	var stats otelexport.Stats
	if cfg.Admin.Listen != "" {
		m := metrics.New()
		ln, err := metrics.Listen(cfg.Admin.Listen, false)
		if err != nil {
			return stop, err
		}
		obs, stats = append(obs, m), m
		o.Self = append(o.Self, ln.Addr().String())
		go func() {
			if err := m.Serve(ctx, ln, log.Named("admin")); err != nil {
				log.Error("admin listener", zap.Error(err))
			}
		}()
		log.Info("admin listening", zap.Stringer("addr", ln.Addr()))
	}
	if otelexport.Enabled(cfg.OTLP, nil) {
		x, err := otelexport.New(ctx, cfg.OTLP, otelexport.Options{Log: log, Stats: stats})
		if err != nil {
			return stop, err
		}
		obs = append(obs, x)
		stop = func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), otlpShutdown)
			defer cancel()
			// Lost traces are logged; they do not fail the proxy's exit.
			if err := x.Shutdown(sctx); err != nil {
				log.Warn("OTLP export: traces still queued were lost", zap.Error(err))
			}
		}
	}
	if len(obs) > 0 {
		o.Observer = obs
	}
	return stop, nil
}

// observers tells several observers (metrics, then OTLP export) in turn.
type observers []proxy.Observer

func (obs observers) ConnOpened(kind string) {
	for _, o := range obs {
		o.ConnOpened(kind)
	}
}

func (obs observers) ConnClosed(ev *event.Event) {
	for _, o := range obs {
		o.ConnClosed(ev)
	}
}
