// Package testtmpfs mounts small tmpfs file systems for tests of what
// happens when a disk fills up: a real ENOSPC, with the kernel's partial
// writes, which no fake writer reproduces.
package testtmpfs

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Mount mounts a tmpfs of size bytes on a new directory and returns it;
// the test's cleanup unmounts it. Where mounting is not permitted (not
// root) the test is skipped, except under CI, which runs as root: there
// it fails.
func Mount(t testing.TB, size int) string {
	t.Helper()
	dir := t.TempDir()
	err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size))
	if err != nil {
		if errors.Is(err, unix.EPERM) && os.Getenv("CI") == "" {
			t.Skipf("mounting a tmpfs is not permitted here (run as root): %v", err)
		}
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
