//go:build !linux

package rstwatch

import "errors"

type sysWatcher struct{}

func newWatcher() (*Watcher, error) {
	return nil, errors.New("rstwatch: not supported on this platform")
}

func (sysWatcher) add(int, uint64, bool) error { return nil }
func (sysWatcher) del(int)                     {}
