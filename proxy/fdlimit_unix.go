//go:build unix

package proxy

import "syscall"

// openFileLimit is the process's file descriptor limit (Go raises the soft
// limit to the hard one at start-up).
func openFileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return rl.Cur, true
}
