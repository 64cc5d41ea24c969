package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/opengeni/opengeni-agent/internal/harness"
	"github.com/opengeni/opengeni-agent/internal/logging"
)

// fleetCommand runs simulated machines against a platform (see
// harness.RunFleet).
const fleetCommand = "fleet"

// runFleet is `harness fleet [flags]`.
func runFleet(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("harness fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: harness fleet -n MACHINES [flags]   (against an in-process platform unless --nats-url is given)")
		fs.PrintDefaults()
	}
	var cfg harness.FleetConfig
	var ext harness.ExternalPlatform
	fs.IntVar(&cfg.Machines, "n", 1000, "simulated machines")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 0, "each machine's heartbeat interval (default 5s, the agent's)")
	fs.DurationVar(&cfg.Window, "window", 0, "how long heartbeat ingestion is measured (default 30s)")
	fs.DurationVar(&cfg.Settle, "settle", 0, "bound on the wait for every machine to be ingested (default 60s + 20ms a machine)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", 0, "machines dialing at once (default 64)")
	fs.IntVar(&cfg.PingConcurrency, "ping-concurrency", 0, "control-plane pings in flight (default 32)")
	fs.BoolVar(&cfg.SimsInProcess, "sims-in-process", false, "run the machines in the platform's process (default: a child process)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the platform process's CPU profile of the run here")
	fs.StringVar(&cfg.SimsCPUProfile, "sims-cpuprofile", "", "write the simulated machines' CPU profile here")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "the in-process platform's state directory (default: a temporary one)")
	jsonPath := fs.String("json", "", "also write the report as JSON to this file")
	logLevel := fs.String("log-level", "info", "log level")
	natsURLs := fs.String("nats-url", "", "external platform: NATS URLs, comma-separated")
	fs.StringVar(&ext.ControlUser, "control-user", "control", "external platform: the control user")
	fs.StringVar(&ext.ControlPassword, "control-password", "", "external platform: the control user's password (or $OPENGENI_FLEET_CONTROL_PASSWORD)")
	fs.StringVar(&ext.SigningSecret, "signing-secret", "", "external platform: the enrollment signing secret (or $OPENGENI_FLEET_SIGNING_SECRET)")
	fs.StringVar(&ext.WorkspaceID, "workspace", "", "external platform: the workspace to enroll into (default: a new one)")
	fs.StringVar(&ext.StorePrefix, "store-prefix", "", "external platform: the store's bucket prefix (default opengeni)")
	fs.StringVar(&ext.MonitorURL, "nats-monitor", "", "external platform: nats-server monitoring URL for varz (http://host:8222)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *natsURLs != "" {
		ext.URLs = strings.Split(*natsURLs, ",")
		ext.ControlPassword = cmp.Or(ext.ControlPassword, os.Getenv("OPENGENI_FLEET_CONTROL_PASSWORD"))
		ext.SigningSecret = cmp.Or(ext.SigningSecret, os.Getenv("OPENGENI_FLEET_SIGNING_SECRET"))
		cfg.External = &ext
	}
	cfg.Logger = logging.New(stderr, *logLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := harness.RunFleet(ctx, cfg)
	if rep == nil {
		return finish(nil, false, err, *jsonPath, stdout, stderr)
	}
	return finish(rep, rep.Pass, err, *jsonPath, stdout, stderr)
}
