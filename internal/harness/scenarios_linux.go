package harness

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// loadFor keeps workers goroutines issuing op(i) (i counting up from start)
// until d has passed or ctx ends, and returns the next unused i.
func loadFor(ctx context.Context, d time.Duration, workers, start int, op func(context.Context, int)) int {
	deadline := time.Now().Add(d)
	var next atomic.Int64
	next.Store(int64(start))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				op(ctx, int(next.Add(1)))
			}
		}()
	}
	wg.Wait()
	return int(next.Load()) + 1
}

// primeOps creates the ops directory content the stat and list ops use.
func primeOps(ctx context.Context, d *Driver) {
	d.FSWriteRead(ctx, 0)
}

func runBaseline(ctx context.Context, e *Env, r *ScenarioResult) error {
	a, err := e.StartAgent(ctx, "baseline")
	if err != nil {
		return err
	}
	rec := &Recorder{}
	d := e.Driver(a, rec, e.p.opTimeout)
	for range e.p.pings {
		d.Ping(ctx, "ping")
	}
	for i := range e.p.execs {
		d.Echo(ctx, "exec", i, "")
	}
	// fs ops: write, read, stat, list per round.
	for i := range e.p.fsOps / 4 {
		d.FSWriteRead(ctx, i)
		d.FSStat(ctx)
		d.FSList(ctx)
	}
	t := rec.Tally()
	r.Latency = rec.Rows()
	r.Metrics["ops"] = float64(t.Total)
	r.Verdicts = append(r.Verdicts, OpVerdicts("", t, true)...)
	return nil
}

func runFlood(ctx context.Context, e *Env, r *ScenarioResult) error {
	// One agent, floodConc ops in flight all the time.
	a, err := e.StartAgent(ctx, "flood-0")
	if err != nil {
		return err
	}
	rec := &Recorder{}
	d := e.Driver(a, rec, e.p.opTimeout)
	primeOps(ctx, d)
	t0 := time.Now()
	probeDone := make(chan struct{})
	var probes sync.WaitGroup
	probes.Add(1)
	go func() { // ping latency while saturated
		defer probes.Done()
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-probeDone:
				return
			case <-tick.C:
				d.Ping(ctx, "ping_while_saturated")
			}
		}
	}()
	loadFor(ctx, e.p.floodFor, e.p.floodConc, 1, d.Mixed)
	close(probeDone)
	probes.Wait()
	t1 := time.Now()
	gap, beats := e.Monitor.MaxHeartbeatGap(a.ID, t0, t1)
	single := rec.Tally()
	r.Metrics["single_agent_ops"] = float64(single.Total)
	r.Metrics["single_agent_heartbeats"] = float64(beats)
	for code, n := range single.ByCode {
		r.Metrics["single_agent_errors_"+code] = float64(n)
	}
	for _, row := range rec.Rows() {
		if row.Op == "ping_while_saturated" {
			r.Metrics["ping_p99_while_saturated_ms"] = row.P99Ms
		}
	}
	r.Verdicts = append(r.Verdicts, OpVerdicts(fmt.Sprintf("one agent × %d in flight", e.p.floodConc), single, false)...)
	r.Verdicts = append(r.Verdicts, Check("one agent: longest heartbeat gap", Millis(gap), AtMost, Millis(e.p.heartbeatGap), "ms").
		With("%d heartbeats in %v", beats, t1.Sub(t0).Round(time.Millisecond)))

	// A fleet: fleet agents, fleetOps ops each at once, round after round.
	fleet := make([]*agentProc, e.p.fleet)
	var startErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k := range fleet {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ag, err := e.StartAgent(ctx, fmt.Sprintf("fleet-%d", k))
			mu.Lock()
			defer mu.Unlock()
			fleet[k] = ag
			if err != nil && startErr == nil {
				startErr = err
			}
		}()
	}
	wg.Wait()
	if startErr != nil {
		return startErr
	}
	frec := &Recorder{}
	drivers := make([]*Driver, len(fleet))
	for k, ag := range fleet {
		drivers[k] = e.Driver(ag, frec, e.p.opTimeout)
		primeOps(ctx, drivers[k])
	}
	t0 = time.Now()
	rounds := 0
	for i := 0; rounds == 0 || (time.Since(t0) < e.p.floodFor && ctx.Err() == nil); rounds++ {
		var round sync.WaitGroup
		for _, dr := range drivers {
			for range e.p.fleetOps {
				i++
				round.Add(1)
				go func(i int) { defer round.Done(); dr.Mixed(ctx, i) }(i)
			}
		}
		round.Wait()
	}
	t1 = time.Now()
	var worst time.Duration
	worstAgent := ""
	for _, ag := range fleet {
		if g, _ := e.Monitor.MaxHeartbeatGap(ag.ID, t0, t1); g > worst {
			worst, worstAgent = g, ag.ID
		}
	}
	ft := frec.Tally()
	r.Metrics["fleet_ops"] = float64(ft.Total)
	r.Metrics["fleet_rounds"] = float64(rounds)
	for code, n := range ft.ByCode {
		r.Metrics["fleet_errors_"+code] = float64(n)
	}
	r.Verdicts = append(r.Verdicts, OpVerdicts(fmt.Sprintf("fleet %d agents × %d ops", e.p.fleet, e.p.fleetOps), ft, false)...)
	r.Verdicts = append(r.Verdicts, Check("fleet: longest heartbeat gap", Millis(worst), AtMost, Millis(e.p.heartbeatGap), "ms").
		With("worst agent %s over %v", worstAgent, t1.Sub(t0).Round(time.Millisecond)))
	r.Latency = rec.Rows()
	for _, row := range frec.Rows() {
		row.Op = "fleet_" + row.Op
		r.Latency = append(r.Latency, row)
	}
	return nil
}

func runSoak(ctx context.Context, e *Env, r *ScenarioResult) error {
	a, err := e.StartAgent(ctx, "soak")
	if err != nil {
		return err
	}
	rec := &Recorder{}
	d := e.Driver(a, rec, e.p.opTimeout)
	primeOps(ctx, d)
	t0 := time.Now()
	warm := min(e.p.soak/5, time.Minute)
	next := loadFor(ctx, warm, e.p.soakWorkers, 1, d.Mixed)
	sample := func() (ProcMem, int, error) {
		time.Sleep(500 * time.Millisecond) // let the last replies' buffers go
		m, err := ReadMem(a.Pid())
		if err != nil {
			return m, 0, err
		}
		fds, err := FDCount(a.Pid())
		return m, fds, err
	}
	memW, fdW, err := sample()
	if err != nil {
		return err
	}
	loadFor(ctx, e.p.soak-warm, e.p.soakWorkers, next, d.Mixed)
	memE, fdE, err := sample()
	if err != nil {
		return err
	}
	t1 := time.Now()
	t := rec.Tally()
	gap, beats := e.Monitor.MaxHeartbeatGap(a.ID, t0, t1)
	r.Latency = rec.Rows()
	r.Metrics["ops"] = float64(t.Total)
	r.Metrics["rss_after_warmup_kib"] = memW.RSSKiB
	r.Metrics["rss_end_kib"] = memE.RSSKiB
	r.Metrics["rss_peak_kib"] = memE.PeakKiB
	r.Metrics["fds_after_warmup"] = float64(fdW)
	r.Metrics["fds_end"] = float64(fdE)
	r.Metrics["soak_s"] = e.p.soak.Seconds()
	r.Verdicts = append(r.Verdicts, OpVerdicts("", t, true)...)
	r.Verdicts = append(r.Verdicts,
		Check("RSS growth from after warm-up to end", DriftPercent(memW.RSSKiB, memE.RSSKiB), AtMost, e.p.rssDriftPct, "%").
			With("%.0f KiB after %v warm-up, %.0f KiB at the end", memW.RSSKiB, warm, memE.RSSKiB),
		Check("open descriptors change from after warm-up to end", absf(float64(fdE-fdW)), AtMost, e.p.fdDrift, "fds").
			With("%d after warm-up, %d at the end", fdW, fdE),
		Check("longest heartbeat gap", Millis(gap), AtMost, Millis(e.p.heartbeatGap), "ms").With("%d heartbeats", beats),
	)
	return nil
}

func absf(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
