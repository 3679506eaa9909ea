// Package timing measures the TCP layer of a connection: DNS and connect
// times, and how the connection closed (FIN order, half-close, RST).
package timing

import "time"

// MS converts a duration to float milliseconds, rounded to microseconds.
func MS(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond)) / float64(time.Millisecond)
}

// MSPtr is MS for fields that are null when unmeasured: d < 0 gives nil.
func MSPtr(d time.Duration) *float64 {
	if d < 0 {
		return nil
	}
	v := MS(d)
	return &v
}
