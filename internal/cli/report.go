package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/inspectproxy/inspectproxy/report"
)

// version is the HAR creator version.
const version = "0.1.0"

func newReport(stdout, stderr io.Writer) *cobra.Command {
	var format, out string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "report EVENTS.jsonl",
		Short: "Latency breakdown per host (text, json, csv, html) or a HAR 1.2 file (har)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer in.Close()
			opts := report.Options{Version: version}
			if st, err := in.Stat(); err == nil {
				opts.Size = st.Size()
			}
			if !quiet {
				opts.Progress = stderr
			}
			w, finish, err := output(stdout, out)
			if err != nil {
				return err
			}
			if format == "har" {
				err = report.WriteHAR(w, in, opts)
			} else {
				var rep *report.Report
				if rep, err = report.Build(in, opts); err == nil {
					err = rep.Write(w, format)
				}
			}
			if ferr := finish(); err == nil {
				err = ferr
			}
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "text, json, csv, html or har")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	return cmd
}

// output opens the report's destination, buffered; finish flushes and closes.
func output(stdout io.Writer, path string) (io.Writer, func() error, error) {
	if path == "" {
		bw := bufio.NewWriter(stdout)
		return bw, bw.Flush, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("report output: %w", err)
	}
	bw := bufio.NewWriter(f)
	return bw, func() error {
		if err := bw.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}, nil
}
