package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/service"
	"github.com/opengeni/opengeni-agent/agent/update"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// cmdUpdate is `update [--check] [--base-url URL] [--channel C]`.
func cmdUpdate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check", false, "only report whether a verified update is available")
	base := fs.String("base-url", envOr("OPENGENI_INSTALL_BASE_URL", update.DefaultBaseURL), "release origin (env OPENGENI_INSTALL_BASE_URL)")
	channel := fs.String("channel", envOr("OPENGENI_UPDATE_CHANNEL", "stable"), "update channel")
	force := fs.Bool("force", false, "ignore the staged-rollout gate (never the signature or version gates)")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	svc := service.Options{Scope: service.User, Warn: func(string) {}}
	restarted := false
	exe, _ := os.Executable()
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	u, err := update.New(update.Options{
		BaseURL: *base, Channel: *channel, AgentID: os.Getenv("OPENGENI_AGENT_ID"),
		CurrentVersion: agent.Version, Executable: exe, Force: *force,
		// The running service learns the stop is for an update from the
		// marker (it then says GoingOffline UPDATE), and is restarted onto
		// the new binary only if it was running.
		Restart: func(ctx context.Context) error {
			st, err := service.Status(ctx, svc)
			if err != nil || !st.Installed {
				return nil
			}
			if err := update.WriteMarker(exe, agent.Version); err != nil {
				return err
			}
			defer update.RemoveMarker(exe)
			if err := service.Restart(ctx, svc); err != nil {
				return err
			}
			restarted = true
			return nil
		},
		Verify: func(ctx context.Context) error {
			if !restarted {
				return nil
			}
			time.Sleep(5 * time.Second) // past a crash at start, within RestartSec
			if st, err := service.Status(ctx, svc); err != nil || !st.Running {
				return fmt.Errorf("service %s after restart", st)
			}
			return nil
		},
	})
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent update:", err)
		return 1
	}
	res, err := u.Check(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent update:", err)
		return 1
	}
	if !res.Available {
		fmt.Fprintf(stdout, "opengeni-agent is up to date (%s). %s\n", agent.Version, res.Reason)
		return 0
	}
	fmt.Fprintf(stdout, "a verified update is available: %s -> %s (%d bytes).\n", agent.Version, res.Manifest.Version, len(res.Binary))
	if *check {
		fmt.Fprintln(stdout, "(--check) not applying. Run `opengeni-agent update` to install it.")
		return 0
	}
	ap, err := u.Apply(ctx, res)
	if err != nil {
		if ap != nil && ap.RolledBack {
			fmt.Fprintf(stderr, "opengeni-agent update: %v\nrolled back to %s.\n", err, agent.Version)
		} else {
			fmt.Fprintln(stderr, "opengeni-agent update:", err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "updated %s to %s; it passed its health check", ap.Path, ap.Version)
	if ap.Previous != "" {
		fmt.Fprintf(stdout, " (previous binary kept at %s)", ap.Previous)
	}
	if restarted {
		fmt.Fprintln(stdout, "; the service was restarted.")
	} else {
		fmt.Fprintln(stdout, ". Restart the agent to run it.")
	}
	return 0
}

// cmdHealth is the hidden `health` subcommand the updater runs against a
// freshly installed binary: it proves the binary starts (runtime, init,
// flag parsing) and says which version it is.
func cmdHealth(stdout io.Writer) int {
	fmt.Fprintf(stdout, "opengeni-agent %s ok\n", agent.Version)
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// stopContext is cancelled by SIGINT/SIGTERM. The cause tells the agent
// what to announce: GoingOffline UPDATE when the updater marked this stop
// as a restart onto a new binary, else USER_STOP.
func stopContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	exe, _ := os.Executable()
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		if update.UpdatePending(exe) {
			cancel(agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_UPDATE, Message: "restarting for an update"})
			return
		}
		cancel(agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "agent stopped"})
	}()
	return ctx, func() { signal.Stop(sigs); close(sigs); cancel(nil) }
}
