package cli

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"go.uber.org/zap"

	"github.com/inspectproxy/inspectproxy/ca"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/metrics"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// extraCommands are the report, ats and ca commands.
func extraCommands(stdout, stderr io.Writer) []*cobra.Command {
	return []*cobra.Command{newCA(stdout, stderr), newATS(stdout), newReport(stdout, stderr)}
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

// addOptional wires the ATS checker, MITM and metrics when configured. It
// returns the MITM CA's certificate (nil when MITM is off) and closeAll,
// which closes what it opened.
func addOptional(ctx context.Context, cfg config.Config, log *zap.Logger, o *proxy.Options) (caCert *x509.Certificate, closeAll func() error, err error) {
	closeAll = func() error { return nil }
	checker, err := atsChecker(cfg.ATS)
	if err != nil {
		return nil, closeAll, err
	}
	o.Checker = checker
	if cfg.MITM.Enabled || len(cfg.MITM.Hosts) > 0 {
		c, err := ca.Load(cfg.MITM.DataDir)
		if err != nil {
			return nil, closeAll, fmt.Errorf("mitm: %w (create one with `inspectproxy ca init`)", err)
		}
		iss, err := ca.NewIssuer(c, ca.IssuerOptions{})
		if err != nil {
			return nil, closeAll, fmt.Errorf("mitm: %w", err)
		}
		if path := keylogPath(cfg.MITM.Keylog); path != "" {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return nil, closeAll, fmt.Errorf("mitm.keylog: %w", err)
			}
			o.KeyLog, closeAll = f, f.Close
			log.Warn("TLS secrets of decrypted connections are written to the key log: whoever reads it can decrypt them", zap.String("keylog", path))
		}
		o.MITM = iss
		caCert = c.Certificate()
		log.Info("MITM on", zap.Bool("all_hosts", cfg.MITM.Enabled), zap.Strings("hosts", cfg.MITM.Hosts), zap.String("ca", c.Fingerprint()))
	}
	if cfg.Admin.Listen != "" {
		m := metrics.New()
		ln, err := metrics.Listen(cfg.Admin.Listen, false)
		if err != nil {
			return nil, closeAll, err
		}
		o.Observers = append(o.Observers, m)
		o.Self = append(o.Self, ln.Addr().String())
		go func() {
			if err := m.Serve(ctx, ln, log.Named("admin")); err != nil {
				log.Error("admin listener", zap.Error(err))
			}
		}()
		log.Info("admin listening", zap.Stringer("addr", ln.Addr()))
	}
	return caCert, closeAll, nil
}
