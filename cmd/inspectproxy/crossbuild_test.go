package main

import (
	"os"
	"os/exec"
	"testing"
)

// TestBuildsForMacOSAndWindows: the binary builds where its users are
// (developers' Macs, and Windows beside Fiddler and Charles), though the
// tests run on Linux. Platform code (splice, TCP_INFO, the reset watch,
// atomic file writes) has a fallback on each; a Linux-only call left in
// common code fails here rather than on a user's machine.
func TestBuildsForMacOSAndWindows(t *testing.T) {
	for _, target := range []struct{ goos, goarch string }{
		{"darwin", "arm64"},
		{"windows", "amd64"},
	} {
		t.Run(target.goos, func(t *testing.T) {
			cmd := exec.Command("go", "build", "-o", os.DevNull, ".")
			cmd.Env = append(os.Environ(), "GOOS="+target.goos, "GOARCH="+target.goarch, "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=%s GOARCH=%s go build: %v\n%s", target.goos, target.goarch, err, out)
			}
		})
	}
}
