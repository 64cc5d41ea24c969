package harness

import (
	"os"
	"strings"
)

// selfRSSKiB is this process's resident memory (VmRSS).
func selfRSSKiB() float64 {
	m, _ := ReadMem(os.Getpid())
	return m.RSSKiB
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
