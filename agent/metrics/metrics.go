// Package metrics samples the host for heartbeats and the metrics op: CPU,
// load, memory, disk of the workspace root and NVIDIA GPUs. Sources are
// gopsutil (portable, well kept) and nvidia-smi; a field the host cannot
// report degrades to 0 rather than failing the sample.
package metrics

import (
	"bytes"
	"context"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Sampler takes host samples. CPU percent is the busy share since the
// previous sample (a heartbeat interval), or over a short window on the
// first call. Safe for concurrent use.
type Sampler struct {
	diskPath string
	logger   *slog.Logger

	mu      sync.Mutex
	prevCPU *cpu.TimesStat

	gpuOnce sync.Once
	smiPath string // "" when nvidia-smi is not installed
}

// New samples the disk that holds diskPath (the workspace root).
func New(diskPath string, logger *slog.Logger) *Sampler {
	if logger == nil {
		logger = slog.Default()
	}
	return &Sampler{diskPath: diskPath, logger: logger}
}

// Metrics serves the metrics op.
func (s *Sampler) Metrics(ctx context.Context, _ *agentpb.MetricsRequest) (*agentpb.MetricsSample, error) {
	return s.Sample(ctx), nil
}

// Sample takes one sample.
func (s *Sampler) Sample(ctx context.Context) *agentpb.MetricsSample {
	m := &agentpb.MetricsSample{SampledAtMs: time.Now().UnixMilli()}
	m.CpuPercent = s.cpuPercent(ctx)
	if avg, err := load.AvgWithContext(ctx); err == nil {
		m.Load1, m.Load5, m.Load15 = nonNeg(avg.Load1), nonNeg(avg.Load5), nonNeg(avg.Load15)
	}
	if misc, err := load.MiscWithContext(ctx); err == nil && misc.ProcsRunning > 0 {
		m.RunQueue = float64(misc.ProcsRunning)
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil && vm.Total > 0 {
		m.MemTotalBytes = vm.Total
		m.MemUsedBytes = vm.Total - min(vm.Available, vm.Total)
	}
	if s.diskPath != "" {
		if du, err := disk.UsageWithContext(ctx, s.diskPath); err == nil {
			m.DiskTotalBytes, m.DiskUsedBytes = diskUsedTotal(du.Total, du.Free)
		}
	}
	m.Gpus = s.gpus(ctx)
	return m
}

func (s *Sampler) cpuPercent(ctx context.Context) float64 {
	now, err := cpuTimes(ctx)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	prev := s.prevCPU
	s.prevCPU = now
	s.mu.Unlock()
	if prev == nil {
		// First sample: measure over a short window instead of since boot.
		if backoff.SleepCtx(ctx, 200*time.Millisecond) != nil {
			return 0
		}
		prev = now
		if now, err = cpuTimes(ctx); err != nil {
			return 0
		}
		s.mu.Lock()
		s.prevCPU = now
		s.mu.Unlock()
	}
	b0, t0 := busyTotal(prev)
	b1, t1 := busyTotal(now)
	return CPUPercent(b0, t0, b1, t1)
}

func cpuTimes(ctx context.Context) (*cpu.TimesStat, error) {
	ts, err := cpu.TimesWithContext(ctx, false)
	if err != nil || len(ts) == 0 {
		return nil, err
	}
	return &ts[0], nil
}

func busyTotal(t *cpu.TimesStat) (busy, total float64) {
	total = t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
	return total - t.Idle - t.Iowait, total
}

// CPUPercent is the busy share between two readings, clamped to [0,100].
func CPUPercent(busy0, total0, busy1, total1 float64) float64 {
	dt := total1 - total0
	if dt <= 0 {
		return 0
	}
	return clamp((busy1-busy0)/dt*100, 0, 100)
}

// diskUsedTotal reports used = total - available, saturating.
func diskUsedTotal(total, avail uint64) (uint64, uint64) {
	return total, total - min(avail, total)
}

func (s *Sampler) gpus(ctx context.Context) []*agentpb.GpuSample {
	s.gpuOnce.Do(func() {
		if p, err := exec.LookPath("nvidia-smi"); err == nil {
			s.smiPath = p
		}
	})
	if s.smiPath == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.smiPath,
		"--query-gpu=name,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits").Output()
	if err != nil {
		s.logger.Debug("nvidia-smi failed", "err", err)
		return nil
	}
	return ParseNvidiaSMI(out)
}

// ParseNvidiaSMI reads `nvidia-smi --query-gpu=name,utilization.gpu,
// memory.used,memory.total --format=csv,noheader,nounits`; malformed lines
// are skipped and MiB become bytes.
func ParseNvidiaSMI(out []byte) []*agentpb.GpuSample {
	var gpus []*agentpb.GpuSample
	for _, line := range bytes.Split(out, []byte("\n")) {
		parts := strings.Split(string(line), ",")
		if len(parts) < 4 {
			continue
		}
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		util, err1 := strconv.ParseFloat(parts[1], 64)
		used, err2 := strconv.ParseUint(parts[2], 10, 64)
		total, err3 := strconv.ParseUint(parts[3], 10, 64)
		if parts[0] == "" || err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		gpus = append(gpus, &agentpb.GpuSample{
			Name: parts[0], UtilPercent: clamp(util, 0, 100),
			MemUsedBytes: used << 20, MemTotalBytes: total << 20,
		})
	}
	return gpus
}

func clamp(v, lo, hi float64) float64 { return max(lo, min(hi, v)) }
func nonNeg(v float64) float64        { return max(0, v) }
