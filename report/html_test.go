package report

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

func goldenHTML(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := buildGolden(t).Write(&b, "html"); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestHTMLStructure checks the page is whole and self-contained: it loads
// nothing (no script, stylesheet, image, frame or url()) and has its charts
// and tables, one row per host or connection.
func TestHTMLStructure(t *testing.T) {
	page := goldenHTML(t)
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	var walk func(n *html.Node, in string)
	walk = func(n *html.Node, in string) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script", "link", "img", "iframe", "object", "embed", "image", "use", "audio", "video", "source":
				t.Errorf("<%s> in a self-contained page", n.Data)
			}
			for _, a := range n.Attr {
				switch {
				case a.Key == "src" || a.Key == "href" || a.Key == "srcset" || a.Key == "action" || a.Key == "xlink:href":
					t.Errorf("<%s %s=%q>: the page must load nothing", n.Data, a.Key, a.Val)
				case strings.HasPrefix(a.Key, "on"):
					t.Errorf("<%s %s>: no script", n.Data, a.Key)
				}
			}
			if id := attr(n, "id"); id != "" {
				in = id
			}
			count[n.Data]++
			count[in+" "+n.Data+"."+attr(n, "class")]++
		}
		if n.Type == html.TextNode && n.Parent != nil && n.Parent.Data == "style" &&
			(strings.Contains(n.Data, "url(") || strings.Contains(n.Data, "@import")) {
			t.Error("the stylesheet loads something")
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, in)
		}
	}
	walk(doc, "")

	rep := buildGolden(t)
	for _, tc := range []struct {
		what string
		key  string
		want int
	}{
		{"charts", "svg.chart", 3},
		{"legend entries", " li.", len(legend)},
		{"host bar labels", "hosts text.label", len(rep.Hosts)},
		{"first waterfall rows", "first line.life", rep.Events},
		// The two failures (refused, reset) never rank among the slowest.
		{"slowest waterfall rows", "slowest line.life", rep.Events - 2},
		{"failure marks in the first waterfall", "first text.fail", 2},
		{"failures table rows", "failures tr.", 3},
		{"resets marked", "first text.rst", 1}, // the other two with their failure marks
		{"latency table host groups", " tbody.host", len(rep.Hosts)},
		{"TLS segments in the first waterfall", "first rect.ph-tls", 9},
		{"half-closes in the first waterfall", "first rect.ph-half-close", 8},
		{"axis breaks", "first rect.break", 1},
	} {
		t.Run(tc.what, func(t *testing.T) {
			got := 0
			for k, n := range count {
				if strings.HasSuffix(k, tc.key) || k == tc.key {
					got += n
				}
			}
			if got != tc.want {
				t.Errorf("%d %q, want %d", got, tc.key, tc.want)
			}
		})
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// TestHTMLChromium renders the page in headless Chromium, offline, and
// checks that it drew a real screenshot with no console error. Under
// -update the screenshot is kept as testdata/screenshot.png for people to
// look at.
func TestHTMLChromium(t *testing.T) {
	page := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(page, goldenHTML(t), 0o644); err != nil {
		t.Fatal(err)
	}
	r := chromium.Check(t, page, 1400, 2000, 50)
	golden.Keep(t, "screenshot.png", r.PNG)
}
