package ats

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/inspectproxy/inspectproxy/internal/chromium"
	"github.com/inspectproxy/inspectproxy/internal/golden"
)

func auditHTML(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := reportFromTestdata(t, true).WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestHTMLGolden pins the audit page, and checks it loads nothing and has
// one section per domain, each needed entry's plist, and the exceptions to
// remove.
func TestHTMLGolden(t *testing.T) {
	page := auditHTML(t)
	golden.Check(t, "report.html", page)
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	sections, pres, overBroadRows := 0, 0, 0
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script", "link", "img", "iframe", "object", "embed":
				t.Errorf("<%s> in a self-contained page", n.Data)
			case "section":
				sections++
			case "pre":
				pres++
			case "td":
				if n.FirstChild != nil && n.FirstChild.Data != "" && strings.Contains(attrOf(n, "class"), "finding") {
					overBroadRows++
				}
			}
			for _, a := range n.Attr {
				if a.Key == "src" || a.Key == "href" || strings.HasPrefix(a.Key, "on") {
					t.Errorf("<%s %s>: the page must load and run nothing", n.Data, a.Key)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	rep := reportFromTestdata(t, true)
	needed := 0
	for _, d := range rep.Domains {
		if d.Needed != nil {
			needed++
		}
	}
	if sections != len(rep.Domains) || pres != needed+1 || overBroadRows != len(rep.OverBroad) {
		t.Errorf("%d sections, %d plist blocks, %d over-broad rows; want %d, %d (one per needed entry and the merged one), %d",
			sections, pres, overBroadRows, len(rep.Domains), needed+1, len(rep.OverBroad))
	}
}

func attrOf(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// TestHTMLChromium renders the audit in headless Chromium: no console
// error, a real page. Under -update the screenshot is kept in testdata.
func TestHTMLChromium(t *testing.T) {
	page := filepath.Join(t.TempDir(), "audit.html")
	if err := os.WriteFile(page, auditHTML(t), 0o644); err != nil {
		t.Fatal(err)
	}
	r := chromium.Check(t, page, 1400, 2400, 12)
	golden.Keep(t, "report-html.png", r.PNG)
}
