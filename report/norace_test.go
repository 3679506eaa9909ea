//go:build !race

package report

// memEvents is TestBoundedMemory's input size.
const memEvents = 50_000
