package report

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Formats are the report formats, har included.
var Formats = []string{"text", "json", "csv", "html", "har"}

// CheckFormat says whether format is one of Formats, before any input is
// read or output created.
func CheckFormat(format string) error {
	if !slices.Contains(Formats, format) {
		return fmt.Errorf("%w %q: want %s", ErrFormat, format, strings.Join(Formats, ", "))
	}
	return nil
}

// Write writes the report in format: "text", "json", "csv" or "html". HAR
// is no view of a Report: WriteHAR streams it from the events.
func (r *Report) Write(w io.Writer, format string) error {
	var err error
	switch format {
	case "text":
		err = r.writeText(w)
	case "json":
		err = jsonIndent(w, r)
	case "csv":
		err = r.writeCSV(w)
	case "html":
		err = r.writeHTML(w)
	default:
		return fmt.Errorf("%w %q: want text, json, csv or html (har is streamed from the events, not built from a report)", ErrFormat, format)
	}
	if err != nil {
		return fmt.Errorf("report: write %s: %w", format, err)
	}
	return nil
}

// summary is the report's first line, shared by text and HTML.
func (r *Report) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d client connections", r.Events)
	if len(r.Kinds) > 0 {
		fmt.Fprintf(&b, " (%s)", countList(r.Kinds))
	}
	if !r.Start.IsZero() {
		fmt.Fprintf(&b, " from %s to %s", r.Start.UTC().Format(time.RFC3339), r.End.UTC().Format(time.RFC3339))
	}
	if r.Malformed > 0 {
		fmt.Fprintf(&b, "; %d malformed lines skipped, the first: %s", r.Malformed, r.FirstMalformed)
	}
	return b.String()
}

// notes are the header lines after the summary: the scope, lost events
// and events not charted.
func (r *Report) notes() []string {
	var out []string
	if r.Filter != "" {
		out = append(out, "Filtered: "+r.Filter+".")
	}
	if l := r.Lost; l != nil {
		s := fmt.Sprintf("%d events lost between %s and %s", l.Events, l.From.UTC().Format(time.RFC3339), l.To.UTC().Format(time.RFC3339))
		if l.Reason != "" {
			s += " (" + l.Reason + ")"
		}
		out = append(out, s+": the proxy could not write them; the figures below lack them.")
	}
	if len(r.Uncharted) > 0 {
		out = append(out, "Not charted: "+countList(r.Uncharted)+" events (not TCP connections).")
	}
	return out
}

// countList is "3 http, 5 tunnel": counts by name, names sorted.
func countList(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// Legends shared by the text and HTML tables.
const (
	latencyLegend  = `Milliseconds; nearest-rank percentiles over the n measured samples; "-" = not measured.`
	closeLegend    = "FIRST FIN and RST by client/server/proxy; no FIN: reset, failed, or closed without a half-close."
	failuresLegend = "Connections that failed, per host and reason: no_request (closed before naming a target), dns, refused, " +
		"timeout, unreachable, proxy_refused (the proxy answered itself: access, auth, a loop, not a proxy request), " +
		"tls_alert (handshake ended early), verify (upstream chain refused), reset, other. They never rank among the slowest."
)

func (r *Report) writeText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Latency report: %s\n", r.summary())
	for _, n := range r.notes() {
		fmt.Fprintln(bw, n)
	}
	fmt.Fprintf(bw, "%s\n\n", latencyLegend)
	width := len("HOST")
	for _, h := range r.Hosts {
		width = max(width, len(h.Name))
	}
	tw := newTable(bw)
	tw.row(width, "HOST", "CONNS", "REQS", fmt.Sprintf("%-7s", "PHASE"), "N", "P50", "P95", "P99", "MAX")
	for _, h := range r.Hosts {
		for i, p := range h.Phases {
			name, conns, reqs := "", "", ""
			if i == 0 {
				name, conns, reqs = h.Name, strconv.Itoa(h.Connections), strconv.Itoa(h.Requests)
			}
			tw.row(width, name, conns, reqs, fmt.Sprintf("%-7s", p.Name), strconv.Itoa(p.N),
				fmtMS(p.P50), fmtMS(p.P95), fmtMS(p.P99), fmtMS(p.Max))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(bw, "\nClose behaviour. %s\n\n", closeLegend)
	tw = newTable(bw)
	tw.row(width, "HOST", "CONNS", "FIRST FIN c/s/p", "NO FIN", "RST c/s/p", "TIMEOUTS", "ERRORS", "HALF-CLOSE N", "P50", "MAX")
	for _, h := range r.Hosts {
		c := h.Close
		tw.row(width, h.Name, strconv.Itoa(h.Connections),
			fmt.Sprintf("%d/%d/%d", c.ClientFirst, c.ServerFirst, c.ProxyFirst), strconv.Itoa(c.NoFIN),
			fmt.Sprintf("%d/%d/%d", c.RSTClient, c.RSTServer, c.RSTProxy), strconv.Itoa(c.Timeouts),
			strconv.Itoa(h.Errors), strconv.Itoa(c.HalfClose.N), fmtMS(c.HalfClose.P50), fmtMS(c.HalfClose.Max))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(bw, "\nFailures: %d connections, per host and reason; failures never rank among the slowest.\n", r.failed())
	if len(r.Failures) > 0 {
		fw := width
		for _, f := range r.Failures {
			fw = max(fw, len(f.Host))
		}
		bw.WriteString("\n")
		tw = table{tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)}
		fmt.Fprintf(tw, "%-*s\tREASON\tCOUNT\tFIRST SEEN\tEXAMPLE\n", fw, "HOST")
		for _, f := range r.Failures {
			fmt.Fprintf(tw, "%-*s\t%s\t%d\t%s\t%s\n", fw, f.Host, f.Reason, f.Count, f.FirstSeen.UTC().Format(time.RFC3339), f.Example)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// failed is how many connections failed.
func (r *Report) failed() int {
	n := 0
	for _, f := range r.Failures {
		n += f.Count
	}
	return n
}

// table is a tabwriter whose cells are right-aligned, which suits numbers;
// the host column, padded by hand to one width, reads left-aligned.
type table struct{ *tabwriter.Writer }

func newTable(w io.Writer) table {
	return table{tabwriter.NewWriter(w, 0, 0, 0, ' ', tabwriter.AlignRight)}
}

// row writes host and cells; the two spaces before each cell keep columns
// apart, since right-aligned cells get no padding on their left.
func (t table) row(width int, host string, cells ...string) {
	fmt.Fprintf(t, "%-*s\t", width, host)
	for _, c := range cells {
		fmt.Fprintf(t, "  %s\t", c)
	}
	fmt.Fprintln(t)
}

// fmtMS is a millisecond value for people: one decimal, "-" if unmeasured.
func fmtMS(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v, 'f', 1, 64)
}

// csvHeader is the CSV's first row. There is one row per host and phase,
// plus a "half_close" row per host; the host columns repeat on each.
var csvHeader = []string{
	"host", "connections", "requests", "reused", "errors",
	"client_fin_first", "server_fin_first", "proxy_fin_first", "no_fin",
	"rst_client", "rst_server", "rst_proxy", "timeouts",
	"phase", "n", "p50_ms", "p95_ms", "p99_ms", "max_ms",
}

func (r *Report) writeCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	for _, h := range r.Hosts {
		c := h.Close
		host := []string{h.Name}
		for _, n := range []int{h.Connections, h.Requests, h.Reused, h.Errors,
			c.ClientFirst, c.ServerFirst, c.ProxyFirst, c.NoFIN, c.RSTClient, c.RSTServer, c.RSTProxy, c.Timeouts} {
			host = append(host, strconv.Itoa(n))
		}
		for _, p := range append(slices.Clone(h.Phases), Phase{Name: "half_close", Stats: c.HalfClose}) {
			row := append(slices.Clone(host), p.Name, strconv.Itoa(p.N), csvMS(p.P50), csvMS(p.P95), csvMS(p.P99), csvMS(p.Max))
			if err := cw.Write(row); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvMS is a millisecond value at full precision, empty if unmeasured.
func csvMS(v *float64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatFloat(*v, 'f', -1, 64)
}
