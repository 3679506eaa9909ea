// Package chromium runs headless Chromium on a local page for tests: a
// screenshot, or the DOM after the page's scripts ran, with the console
// errors it logged. It loads nothing from the network (offline flags).
package chromium

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Path is where Debian's chromium package puts the browser (.ci/run
// installs it).
const Path = "/usr/bin/chromium"

// Result is what one run gave.
type Result struct {
	// Console lists console errors and uncaught exceptions.
	Console []string
	// Screenshot is the PNG, for Screenshot runs.
	Screenshot image.Image
	// PNG is its bytes.
	PNG []byte
	// DOM is the serialised DOM, for DumpDOM runs.
	DOM string
}

// Screenshot renders page (a file path) at width×height.
func Screenshot(t testing.TB, page string, width, height int) Result {
	t.Helper()
	shot := filepath.Join(t.TempDir(), "screenshot.png")
	r := run(t, page, width, height, "--screenshot="+shot)
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("chromium: no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("chromium: screenshot: %v", err)
	}
	r.Screenshot, r.PNG = img, b
	return r
}

// DumpDOM loads page at width×height and returns the DOM once its scripts ran.
func DumpDOM(t testing.TB, page string, width, height int) Result {
	t.Helper()
	return run(t, page, width, height, "--dump-dom")
}

func run(t testing.TB, page string, width, height int, mode string) Result {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Fatalf("no %s (apt-get install -y chromium; .ci/run does): %v", Path, err)
	}
	abs, err := filepath.Abs(page)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--user-data-dir="+filepath.Join(t.TempDir(), "profile"), "--enable-logging=stderr", "--v=0",
		mode, "--window-size="+strconv.Itoa(width)+","+strconv.Itoa(height), "file://"+abs)
	// Chromium forks helpers: on timeout end its whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.Bytes())
	}
	var r Result
	for line := range strings.Lines(stderr.String()) {
		if strings.Contains(line, "CONSOLE") || strings.Contains(line, "Uncaught") {
			r.Console = append(r.Console, line)
		}
	}
	r.DOM = stdout.String()
	return r
}

// Colours counts the distinct colours of img on a 7-pixel grid, up to
// limit: a blank or failed page has one, a chart many.
func Colours(img image.Image, limit int) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y && len(seen) < limit; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}

// Check renders page at width×height and fails t on a console error or a
// screenshot of fewer than minColours colours (a blank or failed page).
func Check(t testing.TB, page string, width, height, minColours int) Result {
	t.Helper()
	r := Screenshot(t, page, width, height)
	for _, line := range r.Console {
		t.Errorf("console error: %s", line)
	}
	if b := r.Screenshot.Bounds(); b.Dx() != width || b.Dy() != height {
		t.Errorf("screenshot is %v, want %dx%d", b, width, height)
	}
	if n := Colours(r.Screenshot, minColours); n < minColours {
		t.Errorf("screenshot has %d colours: the page did not render", n)
	}
	return r
}
