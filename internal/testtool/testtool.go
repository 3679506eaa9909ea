// Package testtool finds the peer programs tests drive (curl, openssl,
// chromium, tshark). CI installs them all (.ci/run), so there a missing
// one fails the test; on a developer's machine it skips it.
package testtool

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// Need returns the path of the command name.
func Need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; .ci/run installs it", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// OpenSSLServer runs `openssl s_server -accept 127.0.0.1:0 args...` until
// the test ends and returns the address it listens on (from its ACCEPT
// line).
func OpenSSLServer(t testing.TB, args ...string) string {
	t.Helper()
	openssl := Need(t, "openssl")
	cmd := exec.Command(openssl, append([]string{"s_server", "-accept", "127.0.0.1:0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("openssl s_server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "ACCEPT "); ok {
			// Keep draining its output so it never blocks on a full pipe.
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return addr
		}
	}
	_ = cmd.Wait() // its stderr is complete only then
	t.Fatalf("openssl s_server %s exited without an ACCEPT line: %s", strings.Join(args, " "), stderr.String())
	return ""
}

// IgnoreRSTWatch is the goleak option for internal/rstwatch's one watcher
// goroutine, which lives as long as the process by design.
var IgnoreRSTWatch = goleak.IgnoreAnyFunction("github.com/inspectproxy/inspectproxy/internal/rstwatch.(*Watcher).loop")
