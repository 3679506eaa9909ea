package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/config"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/proxy"
	"github.com/inspectproxy/inspectproxy/report"
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

func newATS(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{Use: "ats", Short: "App Transport Security: audit events, probe a server"}

	var plist, format, out string
	var asJSON, quiet bool
	var ff filterFlags
	audit := &cobra.Command{
		Use:   "report EVENTS.jsonl [MORE.jsonl[.gz] ...]",
		Short: "Per domain: ATS violations, the NSExceptionDomains entry needed, and over-broad plist exceptions",
		Long: "Reads events files in the order given (gzip-compressed rotated backups too), or - for standard input. " +
			"Connections that never reached a server get no verdict and are listed apart, by reason.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				format = "json"
			}
			write := map[string]func(*ats.Report, io.Writer) error{
				"text": (*ats.Report).WriteText, "json": (*ats.Report).WriteJSON, "html": (*ats.Report).WriteHTML,
			}[format]
			if write == nil {
				return fmt.Errorf("--format %q: want text, json or html", format)
			}
			filter, err := ff.filter()
			if err != nil {
				return err
			}
			var app *ats.AppPolicy
			if plist != "" {
				if app, err = ats.LoadPlist(plist); err != nil {
					return err
				}
			}
			in, err := event.Open(args, stdin)
			if err != nil {
				return err
			}
			defer in.Close()
			tuneGCForReading()
			// The chain is the one part of an event the audit needs that
			// the latency report skips.
			opts := report.Options{Size: in.Size, Filter: filter}
			if !quiet {
				opts.Progress = stderr
			}
			events := report.NewStream(in, opts, event.ReadOptions{Lean: true, Workers: event.Workers()})
			defer events.Close()
			rep, err := ats.BuildReport(events.Next, app)
			events.Done()
			if err != nil {
				return err
			}
			if filter != nil {
				rep.Filter = filter.String()
			}
			w, finish, err := output(stdout, out)
			if err != nil {
				return err
			}
			err = write(rep, w)
			if ferr := finish(err); err == nil {
				err = ferr
			}
			return err
		},
	}
	audit.Flags().StringVar(&plist, "ats-plist", "", "the app's Info.plist (XML or binary)")
	audit.Flags().StringVar(&format, "format", "text", "text, json or html (one self-contained page to hand to the app's developers)")
	audit.Flags().BoolVar(&asJSON, "json", false, "JSON instead of text (same as --format json)")
	audit.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")
	audit.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr (shown for inputs of 32 MB and more)")
	ff.add(audit.Flags())

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
	root.AddCommand(audit, probe)
	return root
}
