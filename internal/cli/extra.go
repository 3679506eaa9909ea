package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/ca"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/metrics"
	"github.com/inspectproxy/inspectproxy/otelexport"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// extraCommands are the report, ats, ca and wireguard commands.
func extraCommands(stdin io.Reader, stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{newCA(stdout, stderr), newATS(stdin, stdout, stderr), newReport(stdin, stdout, stderr), newWireGuard(stdout, stderr)}
}

// keylogPath is mitm.keylog (--keylog), else $SSLKEYLOGFILE, as browsers
// and curl read it.
func keylogPath(configured string) string {
	if configured != "" {
		return configured
	}
	return os.Getenv("SSLKEYLOGFILE")
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
			// Export needs the certificate only, never the key.
			path := filepath.Join(dir, ca.CertFile)
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("ca export: no CA in %s: run `inspectproxy ca init` first", dir)
			}
			if err != nil {
				return fmt.Errorf("ca export: %w", err)
			}
			block, _ := pem.Decode(b)
			if block == nil || block.Type != "CERTIFICATE" {
				return fmt.Errorf("ca export: %s holds no CERTIFICATE PEM block", path)
			}
			if der {
				_, err = stdout.Write(block.Bytes)
			} else {
				err = pem.Encode(stdout, block)
			}
			return err
		},
	}
	export.Flags().BoolVar(&der, "der", false, "DER instead of PEM (what iOS and Android install from a download)")
	root.AddCommand(initCmd, export)
	return root
}

// optional is what addOptional opened: the metrics and their listener,
// served once the events file is open, and what close must close.
type optional struct {
	ca      *x509.Certificate // the MITM CA, nil when MITM is off
	app     *ats.AppPolicy    // the app's Info.plist, nil without ats.plist
	metrics *metrics.Metrics
	admin   net.Listener
	closers []func() error
}

func (p *optional) close() error {
	var errs []error
	for _, c := range p.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// addOptional wires the ATS checker, MITM and OTLP export when
// configured, and binds the admin listener. It returns what it opened
// even with an error.
func addOptional(cfg config.Config, log *zap.Logger, o *proxy.Options) (*optional, error) {
	opt := &optional{}
	checker, err := atsChecker(cfg.ATS)
	if err != nil {
		return opt, err
	}
	o.Checker, opt.app = checker, checker.App
	if cfg.MITM.Enabled || len(cfg.MITM.Hosts) > 0 {
		c, err := ca.Load(cfg.MITM.DataDir)
		if err != nil {
			return opt, fmt.Errorf("mitm: %w (create one with `inspectproxy ca init`)", err)
		}
		iss, err := ca.NewIssuer(c, ca.IssuerOptions{})
		if err != nil {
			return opt, fmt.Errorf("mitm: %w", err)
		}
		if path := keylogPath(cfg.MITM.Keylog); path != "" {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return opt, fmt.Errorf("mitm.keylog: %w", err)
			}
			o.KeyLog = f
			opt.closers = append(opt.closers, f.Close)
			log.Warn("TLS secrets of decrypted connections are written to the key log: whoever reads it can decrypt them", zap.String("keylog", path))
		}
		o.MITM = iss
		opt.ca = c.Certificate()
		log.Info("MITM on", zap.Bool("all_hosts", cfg.MITM.Enabled), zap.Strings("hosts", cfg.MITM.Hosts), zap.String("ca", c.Fingerprint()))
	}
	if cfg.Admin.Listen != "" {
		ln, err := metrics.Listen(cfg.Admin.Listen, false)
		if err != nil {
			return opt, fmt.Errorf("--admin (admin.listen): %w", err)
		}
		// Serve closes it too; this is for the paths that never serve.
		opt.closers = append(opt.closers, func() error { _ = ln.Close(); return nil })
		opt.metrics, opt.admin = metrics.New(), ln
		o.Observers = append(o.Observers, opt.metrics)
		o.Self = append(o.Self, ln.Addr())
		log.Info("admin listening", zap.Stringer("addr", ln.Addr()))
	}
	if otelexport.Enabled(cfg.OTLP, nil) {
		var stats otelexport.Stats
		if opt.metrics != nil {
			stats = opt.metrics
		}
		x, err := otelexport.New(context.Background(), cfg.OTLP, otelexport.Options{Log: log, Stats: stats})
		if err != nil {
			return opt, err
		}
		o.Observers = append(o.Observers, x)
		opt.closers = append(opt.closers, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), otlpShutdown)
			defer cancel()
			// Lost traces are logged; they do not fail the proxy's exit.
			if err := x.Shutdown(ctx); err != nil {
				log.Warn("OTLP export: traces still queued were lost", zap.Error(err))
			}
			return nil
		})
	}
	return opt, nil
}

// otlpShutdown is how long queued spans get to reach the collector when
// the proxy stops.
const otlpShutdown = 5 * time.Second
