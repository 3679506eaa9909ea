package netns

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const hostsChildEnv = "NETNS_HOSTS_CHILD"

// RunWithHosts runs the test named test of this test binary again, in a
// child process with a private mount namespace whose /etc/hosts is hosts:
// so a test can see what a hostile hosts file (localhost pointing
// elsewhere) does without touching the machine's. The child knows itself
// by InHostsChild; its output and exit status are returned.
func RunWithHosts(t testing.TB, hosts, test string) ([]byte, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(file, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "sh", "-c", `mount --bind "$1" /etc/hosts && exec "$2" -test.run="^$3\$"`, "sh", file, os.Args[0], test)
	cmd.Env = append(os.Environ(), hostsChildEnv+"=1")
	return cmd.CombinedOutput()
}

// InHostsChild reports whether this process is RunWithHosts's child.
func InHostsChild() bool { return os.Getenv(hostsChildEnv) != "" }
