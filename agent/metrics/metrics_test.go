package metrics

import (
	"context"
	"math"
	"os"
	"runtime"
	"testing"
)

func TestSampleIsSaneOnThisHost(t *testing.T) {
	s := New(t.TempDir(), nil)
	for i := 0; i < 2; i++ { // the second sample measures since the first
		m := s.Sample(context.Background())
		if m.SampledAtMs <= 0 {
			t.Fatal("sample is not timestamped")
		}
		if m.CpuPercent < 0 || m.CpuPercent > 100 || m.Load1 < 0 || m.RunQueue < 0 {
			t.Fatalf("out of bounds: %+v", m)
		}
		if m.MemTotalBytes == 0 || m.MemUsedBytes > m.MemTotalBytes {
			t.Fatalf("memory: used %d total %d", m.MemUsedBytes, m.MemTotalBytes)
		}
		if m.DiskTotalBytes == 0 || m.DiskUsedBytes > m.DiskTotalBytes {
			t.Fatalf("disk: used %d total %d", m.DiskUsedBytes, m.DiskTotalBytes)
		}
	}
}

func TestCPUPercent(t *testing.T) {
	tests := []struct {
		b0, t0, b1, t1, want float64
	}{
		{100, 1000, 150, 1100, 50},
		{100, 1000, 100, 1000, 0}, // no advance
		{0, 0, 200, 100, 100},     // clamped
		{100, 1000, 90, 1100, 0},  // counter went back: clamped
	}
	for _, tt := range tests {
		if got := CPUPercent(tt.b0, tt.t0, tt.b1, tt.t1); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("CPUPercent(%v,%v,%v,%v) = %v, want %v", tt.b0, tt.t0, tt.b1, tt.t1, got, tt.want)
		}
	}
}

func TestDiskUsedTotal(t *testing.T) {
	total, used := diskUsedTotal(262144*4096, 131072*4096)
	if total != 1<<30 || used != 512<<20 {
		t.Fatalf("total %d used %d", total, used)
	}
	if _, used := diskUsedTotal(10, 20); used != 0 {
		t.Fatalf("available over total must clamp used to 0, got %d", used)
	}
}

func TestParseNvidiaSMI(t *testing.T) {
	out := []byte("NVIDIA A100-SXM4-40GB, 73, 4096, 40960\ngarbage line\nTesla T4, 150, 10, 15360\n, 1, 2, 3\n")
	g := ParseNvidiaSMI(out)
	if len(g) != 2 {
		t.Fatalf("got %d gpus, want 2", len(g))
	}
	if g[0].Name != "NVIDIA A100-SXM4-40GB" || g[0].UtilPercent != 73 || g[0].MemUsedBytes != 4096<<20 || g[0].MemTotalBytes != 40960<<20 {
		t.Fatalf("gpu0 = %+v", g[0])
	}
	if g[1].UtilPercent != 100 {
		t.Fatalf("util not clamped: %v", g[1].UtilPercent)
	}
	if ParseNvidiaSMI(nil) != nil {
		t.Fatal("empty output must give no gpus")
	}
}

// Capacity reports real headroom: opening files lowers the fd headroom by
// as many.
func TestCapacity(t *testing.T) {
	s := New(t.TempDir(), nil)
	c := s.Capacity(context.Background())
	if c.GetNproc() == 0 || c.GetMemAvailableBytes() == 0 || c.GetDiskFreeBytes() == 0 {
		t.Fatalf("capacity %v", c)
	}
	if runtime.GOOS != "linux" {
		return
	}
	if c.GetFdHeadroom() == 0 || c.GetPidHeadroom() == 0 {
		t.Fatalf("headroom %v", c)
	}
	var files []*os.File
	for i := 0; i < 20; i++ {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	after := s.Capacity(context.Background())
	// Other goroutines may open or close a few files meanwhile.
	if d := int64(c.GetFdHeadroom()) - int64(after.GetFdHeadroom()); d < 15 || d > 25 {
		t.Fatalf("fd headroom %d -> %d after opening 20 files", c.GetFdHeadroom(), after.GetFdHeadroom())
	}
}
