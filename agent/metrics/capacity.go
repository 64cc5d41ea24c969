package metrics

import (
	"context"
	"runtime"

	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/mem"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Capacity samples how much room the host has left (the next revision's
// HostCapacitySample): memory available, free disk under the workspace root,
// how many more files this process may open and processes the host may
// start, and the CPU count. A value the host cannot report is 0.
func (s *Sampler) Capacity(ctx context.Context) *agentpb.HostCapacitySample {
	c := &agentpb.HostCapacitySample{Nproc: uint64(runtime.NumCPU())}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		c.MemAvailableBytes = vm.Available
	}
	if s.diskPath != "" {
		if du, err := disk.UsageWithContext(ctx, s.diskPath); err == nil {
			c.DiskFreeBytes = du.Free
		}
	}
	c.FdHeadroom, c.PidHeadroom = headroom()
	return c
}
