package report

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"

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
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no %s (apt-get install -y chromium): %v", chromium, err)
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	shot := filepath.Join(dir, "screenshot.png")
	if err := os.WriteFile(page, goldenHTML(t), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--enable-logging=stderr", "--v=0",
		"--screenshot="+shot, "--window-size=1400,2000", "file://"+page)
	// Chromium forks helpers: on timeout end its whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.Bytes())
	}
	for line := range strings.Lines(stderr.String()) {
		if strings.Contains(line, "CONSOLE") || strings.Contains(line, "Uncaught") {
			t.Errorf("console error: %s", line)
		}
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, stderr.Bytes())
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1400 || b.Dy() != 2000 {
		t.Errorf("screenshot is %v, want 1400x2000", b)
	}
	// A blank or failed page is one colour; the charts bring many.
	colours := map[[4]uint32]bool{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y && len(colours) < 50; y += 7 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 7 {
			r, g, b, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, b, a}] = true
		}
	}
	if len(colours) < 50 {
		t.Errorf("screenshot has %d colours: the page did not render", len(colours))
	}
	if *golden.Update {
		b, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/screenshot.png", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
