//go:build race

package report

// memEvents is TestBoundedMemory's input size. The race detector makes
// decoding ten times slower, so it reads fewer events, still enough that
// keeping them would break the bound.
const memEvents = 12_000
