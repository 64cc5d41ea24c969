package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"
	"time"
)

// scenarioFuncs are the scenarios; each fills in its result and returns an
// error only when it could not run to the end.
var scenarioFuncs = map[string]func(context.Context, *Env, *ScenarioResult) error{
	"baseline":    runBaseline,
	"flood":       runFlood,
	"large":       runLarge,
	"long":        runLong,
	"chaos-nats":  runChaosNATS,
	"chaos-agent": runChaosAgent,
	"soak":        runSoak,
}

// Run runs the configured scenarios and returns the report. The first
// SIGINT/SIGTERM stops the run (the processes are ended and the partial
// report is returned with the error); a second one ends every process of the
// run and exits at once.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	var idb [6]byte
	_, _ = rand.Read(idb[:])
	runID := hex.EncodeToString(idb[:])
	p := paramsFor(cfg)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-sigs:
			cfg.Logger.Warn("interrupted; stopping the run (again to kill everything now)")
			cancel()
		case <-finished:
			return
		}
		select {
		case <-sigs:
			killPIDs(MarkedProcesses(runID))
			os.Exit(130)
		case <-finished:
		}
	}()

	env, err := newEnv(ctx, cfg, p, runID)
	if err != nil {
		return nil, err
	}
	defer env.Close()

	rep := &Report{Started: time.Now().UTC(), Short: cfg.Short,
		Host: HostInfo{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVer: runtime.Version()}}
	for _, name := range cfg.Scenarios {
		if ctx.Err() != nil {
			break
		}
		cfg.Logger.Info("scenario", "name", name)
		rep.Scenarios = append(rep.Scenarios, runScenario(ctx, env, name))
	}
	rep.Decide()
	if ctx.Err() != nil {
		return rep, fmt.Errorf("harness interrupted: %w", ctx.Err())
	}
	return rep, nil
}

// runScenario runs one scenario, stops its agents and judges what the run
// left behind.
func runScenario(ctx context.Context, e *Env, name string) ScenarioResult {
	start := time.Now()
	r := ScenarioResult{Name: name, Metrics: map[string]float64{}}
	run := scenarioFuncs[name]
	switch {
	case run == nil:
		r.Error = "unknown scenario"
	default:
		if err := e.ensureNATS(ctx); err != nil {
			r.Error = "nats-server: " + err.Error()
		} else if err := run(ctx, e, &r); err != nil {
			r.Error = err.Error()
		} else if ctx.Err() != nil {
			r.Error = "interrupted"
		}
	}
	e.stopAgents(40 * time.Second)
	left := slices.DeleteFunc(MarkedProcesses(e.runID), func(pid int) bool {
		return e.nats.c != nil && pid == e.nats.c.pid()
	})
	r.Verdicts = append(r.Verdicts, Check("processes left behind after the agents stopped", float64(len(left)), AtMost, 0, "procs").
		With("pids %v", left))
	killPIDs(left)
	r.DurationS = float64(time.Since(start).Milliseconds()) / 1000
	r.Decide()
	return r
}
