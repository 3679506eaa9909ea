package ats

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
)

//go:embed report.html.tmpl
var htmlTemplate string

var htmlPage = template.Must(template.New("ats").Funcs(template.FuncMap{
	"plural": plural,
	"verdict": func(d *DomainReport) string {
		switch {
		case d.NonCompliant > 0:
			return "no"
		case d.Unknown > 0:
			return "unknown"
		}
		return "yes"
	},
	"join": strings.Join,
}).Parse(htmlTemplate))

// htmlView is what the page shows, laid out in Go so that it needs no script.
type htmlView struct {
	*Report
	Never []neverRow
	// Plist is every needed entry together, ready to paste under
	// NSExceptionDomains.
	Plist string
}

type neverRow struct {
	Reason string
	Count  int
	Hosts  string
}

// WriteHTML writes the audit as one self-contained page (inline CSS, no
// script, nothing loaded) an auditor can hand to the app's developers:
// per host the verdict, the rules broken with an example, the exact
// Info.plist entry to add, and the app's exceptions nothing needed.
func (r *Report) WriteHTML(w io.Writer) error {
	v := htmlView{Report: r}
	for _, c := range neverOrder(r) {
		v.Never = append(v.Never, neverRow{Reason: c, Count: r.NeverConnected[c], Hosts: strings.Join(r.NeverConnectedHosts[c], ", ")})
	}
	var plist strings.Builder
	for _, d := range r.Domains {
		if d.Needed != nil {
			plist.WriteString(d.Needed.PlistXML)
		}
	}
	if plist.Len() > 0 {
		v.Plist = "<key>NSAppTransportSecurity</key>\n<dict>\n\t<key>NSExceptionDomains</key>\n\t<dict>\n" +
			indent(plist.String(), "\t\t") + "\t</dict>\n</dict>\n"
	}
	if err := htmlPage.Execute(w, v); err != nil {
		return fmt.Errorf("ats: write html: %w", err)
	}
	return nil
}

func indent(s, prefix string) string {
	var b strings.Builder
	for l := range strings.Lines(s) {
		b.WriteString(prefix + l)
	}
	return b.String()
}
