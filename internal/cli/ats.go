package cli

import (
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/proxy"
)

// atsChecker builds the ATS checker of the ats config section.
func atsChecker(c config.ATS) (ats.Checker, error) {
	pol, err := ats.PolicyFor(c.MinTLSVersion, c.RequireForwardSecrecy)
	if err != nil {
		return ats.Checker{}, err
	}
	ch := ats.Checker{Policy: pol}
	if c.Plist != "" {
		if ch.App, err = ats.LoadPlist(c.Plist); err != nil {
			return ch, err
		}
	}
	return ch, nil
}

func newATS(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{Use: "ats", Short: "App Transport Security: audit events, probe a server"}

	var plist string
	var asJSON bool
	report := &cobra.Command{
		Use:   "report EVENTS.jsonl",
		Short: "Per domain: ATS violations, the NSExceptionDomains entry needed, and over-broad plist exceptions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var app *ats.AppPolicy
			if plist != "" {
				var err error
				if app, err = ats.LoadPlist(plist); err != nil {
					return err
				}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			rep, err := ats.BuildReport(event.NewReader(f).Next, app)
			if err != nil {
				return err
			}
			if asJSON {
				return rep.WriteJSON(stdout)
			}
			return rep.WriteText(stdout)
		},
	}
	report.Flags().StringVar(&plist, "ats-plist", "", "the app's Info.plist (XML or binary)")
	report.Flags().BoolVar(&asJSON, "json", false, "JSON instead of text")

	var probeJSON bool
	var timeout time.Duration
	var roots []string
	probe := &cobra.Command{
		Use:   "probe https://host[:port]",
		Short: "Try nscurl --ats-diagnostics' configurations against a server, in its order",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool, err := proxy.LoadRoots(roots)
			if err != nil {
				return err
			}
			rep, err := ats.Probe(cmd.Context(), args[0], ats.ProbeOptions{Timeout: timeout, Roots: pool})
			if err != nil {
				return err
			}
			if probeJSON {
				return rep.WriteJSON(stdout)
			}
			return rep.WriteText(stdout)
		},
	}
	probe.Flags().BoolVar(&probeJSON, "json", false, "JSON instead of text")
	probe.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "per configuration")
	probe.Flags().StringSliceVar(&roots, "extra-roots", nil, "PEM files of roots trusted besides the system's (a device's user-installed roots)")
	root.AddCommand(report, probe)
	return root
}
