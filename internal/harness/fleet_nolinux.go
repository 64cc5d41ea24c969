//go:build !linux

package harness

// selfRSSKiB: resident memory is read from /proc, Linux only (0 here).
func selfRSSKiB() float64 { return 0 }

// loadAverage: read from /proc, Linux only.
func loadAverage() string { return "" }
