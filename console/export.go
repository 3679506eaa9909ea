package console

// The one file that calls the report and ats packages: exports are the
// command line's own outputs, computed on the events the console shows.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/inspectproxy/inspectproxy/ats"
	"github.com/inspectproxy/inspectproxy/event"
	"github.com/inspectproxy/inspectproxy/report"
)

// format is one export: its content type and file name extension.
type format struct {
	contentType, ext string
}

var formats = map[string]format{
	"jsonl": {"application/x-ndjson", "jsonl"},
	"har":   {"application/json", "har"},
	"html":  {"text/html; charset=utf-8", "html"},
	"ats":   {"text/plain; charset=utf-8", "txt"},
}

// export writes evs in format name: JSON lines as in the events file, a
// HAR 1.2 archive, the latency report's HTML, or the ATS report's text.
func export(w io.Writer, name string, evs []*event.Event, app *ats.AppPolicy, version string) error {
	if name == "ats" {
		rep, err := ats.BuildReport(iterate(evs), app)
		if err != nil {
			return err
		}
		return rep.WriteText(w)
	}
	var lines bytes.Buffer
	enc := json.NewEncoder(&lines) // one event per line, as in the events file
	for _, ev := range evs {
		if err := enc.Encode(ev); err != nil {
			return fmt.Errorf("console: export %s: %w", ev.ID, err)
		}
	}
	opts := report.Options{Version: version}
	switch name {
	case "jsonl":
		_, err := lines.WriteTo(w)
		return err
	case "har":
		return report.WriteHAR(w, &lines, opts)
	case "html":
		rep, err := report.Build(&lines, opts)
		if err != nil {
			return err
		}
		return rep.Write(w, "html")
	}
	return fmt.Errorf("console: export format %q: want jsonl, har, html or ats", name)
}

// Advice is what the ATS audit says about one connection's hosts: the
// Info.plist entry that would allow it, and what no entry fixes.
type Advice struct {
	Domain    string   `json:"domain"`
	PlistXML  string   `json:"plist_xml,omitempty"`
	Unfixable []string `json:"unfixable,omitempty"`
	Note      string   `json:"note,omitempty"`
}

// advise runs the ATS report on one event.
func advise(ev *event.Event, app *ats.AppPolicy) []Advice {
	rep, err := ats.BuildReport(iterate([]*event.Event{ev}), app)
	if err != nil {
		return nil
	}
	var out []Advice
	for _, d := range rep.Domains {
		a := Advice{Domain: d.Domain, Unfixable: d.Unfixable, Note: d.Note}
		if d.Needed != nil {
			a.PlistXML = d.Needed.PlistXML
		}
		if a.PlistXML != "" || len(a.Unfixable) > 0 || a.Note != "" {
			out = append(out, a)
		}
	}
	return slices.Clip(out)
}

// iterate is ats.BuildReport's reader over a slice.
func iterate(evs []*event.Event) func() (*event.Event, error) {
	return func() (*event.Event, error) {
		if len(evs) == 0 {
			return nil, io.EOF
		}
		ev := evs[0]
		evs = evs[1:]
		return ev, nil
	}
}
