// Package harness is the load and chaos harness behind cmd/harness: it runs
// the real opengeni-agent binary as child processes against a nats-server in
// its own process, drives them through the control library, and judges what
// it measured as verdicts (data: name, measured value, threshold, pass).
package harness

import (
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Scenarios names every scenario in the order `all` runs them.
var Scenarios = []string{"baseline", "flood", "large", "long", "chaos-nats", "chaos-agent", "soak"}

// Config is one harness run.
type Config struct {
	// Scenarios to run, in order (names from Scenarios).
	Scenarios []string
	// Short runs the scaled-down variants (CI: the whole run under 3 minutes).
	Short bool
	// Soak is the soak scenario's length; 0 means 10m (20s with Short).
	Soak time.Duration
	// AgentBin is a prebuilt opengeni-agent; "" builds one.
	AgentBin string
	Logger   *slog.Logger
}

// Select resolves the command line's scenario argument ("all" or a name).
func Select(arg string) ([]string, error) {
	if arg == "all" {
		return slices.Clone(Scenarios), nil
	}
	if slices.Contains(Scenarios, arg) {
		return []string{arg}, nil
	}
	return nil, fmt.Errorf("unknown scenario %q (want all or one of %v)", arg, Scenarios)
}

// params are the sizes of one run, full or short.
type params struct {
	pings, execs, fsOps int

	floodConc    int
	floodFor     time.Duration
	fleet        int
	fleetOps     int
	heartbeatGap time.Duration
	largeSizes   []int
	longSleep    time.Duration
	longDeadline time.Duration
	shortSleep   time.Duration
	chaosDown    time.Duration
	chaosFreeze  time.Duration
	chaosExec    time.Duration
	reconnectMax time.Duration
	soak         time.Duration
	soakWorkers  int
	goneWait     time.Duration
	rssDriftPct  float64
	fdDrift      float64
	opTimeout    time.Duration
}

func paramsFor(cfg Config) params {
	p := params{
		pings: 1000, execs: 200, fsOps: 100,
		floodConc: 256, floodFor: 30 * time.Second, fleet: 32, fleetOps: 16,
		heartbeatGap: 7500 * time.Millisecond,
		largeSizes:   []int{256 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20},
		longSleep:    45 * time.Second, longDeadline: 30 * time.Second, shortSleep: 5 * time.Second,
		chaosDown: 3 * time.Second, chaosFreeze: 10 * time.Second, chaosExec: 6 * time.Second,
		reconnectMax: 15 * time.Second,
		soak:         10 * time.Minute, soakWorkers: 8,
		goneWait:    5 * time.Second,
		rssDriftPct: 20, fdDrift: 4,
		opTimeout: 30 * time.Second,
	}
	if cfg.Short {
		p.pings, p.execs, p.fsOps = 200, 50, 40
		p.floodConc, p.floodFor, p.fleet, p.fleetOps = 64, 8*time.Second, 8, 8
		p.largeSizes = []int{256 << 10, 1 << 20, 8 << 20}
		p.longSleep, p.longDeadline, p.shortSleep = 9*time.Second, 6*time.Second, 1*time.Second
		p.chaosDown, p.chaosFreeze, p.chaosExec = 1*time.Second, 3*time.Second, 3*time.Second
		p.soak, p.soakWorkers = 20*time.Second, 4
	}
	if cfg.Soak > 0 {
		p.soak = cfg.Soak
	}
	return p
}
