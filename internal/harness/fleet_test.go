package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain runs the fleet's simulated machines when the fleet under test
// starts this test binary as its sims process.
func TestMain(m *testing.M) {
	if os.Getenv(FleetSimsEnv) == "1" {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if err := ServeFleetSims(os.Stdin, os.Stdout, log); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// A small fleet against a real platform: every machine connects through
// the auth callout, its Hello and heartbeats are ingested by the store,
// and it answers the control plane's ping and the exec stub; in a child
// process (the default), in the test's process, and against the platform
// as an external one (NATS URL, control user, signing secret).
func TestFleet(t *testing.T) {
	const n = 20
	tests := []struct {
		name     string
		inProc   bool
		external bool
	}{
		{"sims in a child process", false, false},
		{"sims in process", true, false},
		{"external platform", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			cfg := FleetConfig{Machines: n, Heartbeat: 500 * time.Millisecond, Window: time.Second,
				SimsInProcess: tt.inProc, DataDir: t.TempDir(), Logger: testLogger(t)}
			if tt.external {
				target, err := startLocalPlatform(ctx, t.TempDir(), testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				defer target.Close()
				ext := target.AsExternal
				ext.WorkspaceID = "" // a new workspace of its own
				cfg.External = &ext
			}
			rep, err := RunFleet(ctx, cfg)
			if err != nil {
				t.Fatalf("RunFleet: %v (report %+v)", err, rep)
			}
			var sum strings.Builder
			if err := rep.WriteSummary(&sum); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + sum.String())
			for _, c := range []struct {
				what      string
				got, want int
			}{
				{"connected", rep.Connect.Connected, n},
				{"hellos ingested", rep.Ingest.Hellos, n},
				{"machines with a heartbeat ingested", rep.Ingest.Beaten, n},
				{"pings answered", rep.Ping.Answered, n},
				{"pings served by the machines", int(rep.SimStat.PingsServed), n},
				{"exec stubs answered right", rep.Exec.OK, min(n, fleetExecSample)},
			} {
				if c.got != c.want {
					t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
				}
			}
			if rep.Ingest.Heartbeats == 0 {
				t.Error("no heartbeat ingested in the window")
			}
			if !rep.Pass || len(rep.Problems) > 0 {
				t.Errorf("pass %v, problems %q", rep.Pass, rep.Problems)
			}
		})
	}
}

// A machine whose bearer the callout refuses does not connect, and the
// fleet says why.
func TestFleetRefusedBearer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	target, err := startLocalPlatform(ctx, t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	machines, err := enrollFleet(ctx, target, 3)
	if err != nil {
		t.Fatal(err)
	}
	machines[1].Bearer += "x" // a broken signature
	r := startSimsInProcess(simSpec{URLs: target.URLs, WorkspaceID: target.WorkspaceID, Machines: machines,
		Heartbeat: time.Second, ConnectTimeout: 5 * time.Second}, testLogger(t))
	ev, err := r.next(ctx, "connected")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if ev.Connected != 2 || ev.Failed != 1 || !strings.Contains(ev.FirstError, machines[1].AgentID) ||
		!strings.Contains(strings.ToLower(ev.FirstError), "authorization") {
		t.Fatalf("connected %d, failed %d, first error %q; want 2, 1 and machine %s's authorization failure",
			ev.Connected, ev.Failed, ev.FirstError, machines[1].AgentID)
	}
}
