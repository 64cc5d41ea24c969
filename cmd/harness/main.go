// Command harness is the load and chaos harness: it runs the real
// opengeni-agent binary against a nats-server in its own process, drives it
// through the control library, prints a summary table, optionally writes
// JSON, and exits 0 iff every verdict passes.
//
//	go run ./cmd/harness <scenario>|all [--short] [--json FILE] [--soak DURATION] [--agent-bin PATH]
//	go run ./cmd/harness fleet -n 1000 [--json FILE] [--cpuprofile FILE] [...]   (simulated machines; see fleet --help)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/opengeni/opengeni-agent/internal/harness"
	"github.com/opengeni/opengeni-agent/internal/logging"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 2 && args[0] == harness.NATSServerCommand {
		port, err := strconv.Atoi(args[1])
		if err == nil {
			err = harness.ServeNATS(port, stdout)
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	if len(args) > 0 && args[0] == fleetCommand {
		return runFleet(args[1:], stdout, stderr)
	}
	if len(args) == 1 && args[0] == harness.FleetSimsCommand {
		if err := harness.ServeFleetSims(os.Stdin, stdout, logging.New(stderr, "warn")); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	fs := flag.NewFlagSet("harness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: harness <scenario>|all [flags]\n       harness fleet -n MACHINES [flags] (harness fleet --help)\nscenarios: %v\n", harness.Scenarios)
		fs.PrintDefaults()
	}
	short := fs.Bool("short", false, "run the scaled-down variants (CI)")
	jsonPath := fs.String("json", "", "also write the report as JSON to this file")
	soak := fs.Duration("soak", 0, "length of the soak scenario (default 10m, 20s with --short)")
	agentBin := fs.String("agent-bin", "", "use this opengeni-agent binary instead of building one")
	logLevel := fs.String("log-level", "info", "harness log level")
	// The scenario may come before or after the flags.
	var positional []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return 2
	}
	scenarios, err := harness.Select(positional[0])
	if err != nil {
		fmt.Fprintln(stderr, "harness:", err)
		return 2
	}
	cfg := harness.Config{Scenarios: scenarios, Short: *short, Soak: *soak, AgentBin: *agentBin,
		Logger: logging.New(stderr, *logLevel)}
	rep, err := harness.Run(context.Background(), cfg)
	if rep == nil {
		return finish(nil, false, err, *jsonPath, stdout, stderr)
	}
	return finish(rep, rep.Pass, err, *jsonPath, stdout, stderr)
}

// report is what a run returns: the scenarios' or the fleet's.
type report interface {
	WriteSummary(io.Writer) error
	WriteJSON(io.Writer) error
}

// finish prints the report (nil when the run made none), writes it as JSON
// to jsonPath when set, and returns the exit code: 0 iff the run finished
// and passed.
func finish(rep report, pass bool, err error, jsonPath string, stdout, stderr io.Writer) int {
	if rep != nil {
		_ = rep.WriteSummary(stdout)
		if jsonPath != "" {
			if werr := writeJSON(jsonPath, rep); werr != nil {
				fmt.Fprintln(stderr, "harness:", werr)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "harness:", err)
		return 1
	}
	if !pass {
		return 1
	}
	return 0
}

// writeJSON writes a report as JSON to path.
func writeJSON(path string, rep report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
