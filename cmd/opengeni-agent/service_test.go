package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/internal/testbin"
)

// TestServiceManagerUnavailable runs the built binary where systemd cannot
// be reached (no user bus, no systemctl, no systemd as init): status still
// shows the connections and says what to do, exiting 0; the actions that
// needed the manager exit 3 and change nothing.
func TestServiceManagerUnavailable(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("systemd is Linux-only")
	}
	bin := testbin.Agent(t, "", "")
	systemctl, _ := exec.LookPath("systemctl")
	noTools := t.TempDir() // a PATH without systemctl
	booted := false        // sd_booted(3): systemd is the init system
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		booted = true
	}
	cases := []struct {
		name      string
		args      []string
		nowhere   bool // point XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS at a missing dir (else unset)
		path      string
		skip      string
		code      int
		stdout    []string
		stderr    []string
		unitWrote bool
	}{
		{name: "status, bus vars point nowhere", args: []string{"status"}, nowhere: true, skip: needs(systemctl != ""), code: 0,
			stdout: []string{"connections: 1", "agent-" + wsA, "opengeni-agent service (user scope): service manager unavailable (no user bus: nothing answers at XDG_RUNTIME_DIR=", "run `opengeni-agent run` in a terminal", "enable-linger"}},
		{name: "status, bus vars unset", args: []string{"status"}, skip: needs(systemctl != ""), code: 0,
			stdout: []string{"connections: 1", "service manager unavailable (no user bus: $XDG_RUNTIME_DIR is not set)"}},
		{name: "service status, no systemctl", args: []string{"service", "status"}, path: noTools, code: 0,
			stdout: []string{"service manager unavailable (systemctl is not installed)", "opengeni-agent run` in a terminal"}},
		{name: "status --system, systemd not init", args: []string{"status", "--system"}, skip: needs(systemctl != "" && !booted), code: 0,
			stdout: []string{"connections: 1", "(system scope): service manager unavailable (systemd is not running as the init system)"}},
		{name: "service install, no user bus", args: []string{"service", "install"}, nowhere: true, skip: needs(systemctl != ""), code: exitServiceUnavailable,
			stderr: []string{"opengeni-agent service install: service manager unavailable (no user bus", "Nothing was changed."}},
		{name: "start, no systemctl", args: []string{"start"}, path: noTools, code: exitServiceUnavailable,
			stderr: []string{"opengeni-agent start: service manager unavailable (systemctl is not installed)", "Nothing was changed."}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			home := t.TempDir()
			cfg := filepath.Join(home, "cfg")
			saveConn(t, config.NewStore(cfg), wsA, "nats://127.0.0.1:1")
			path := tc.path
			if path == "" {
				path = os.Getenv("PATH")
			}
			env := []string{"HOME=" + home, "PATH=" + path, "OPENGENI_CONFIG_DIR=" + cfg, "USER=nobody"}
			if tc.nowhere {
				env = append(env, "XDG_RUNTIME_DIR="+filepath.Join(home, "nowhere"),
					"DBUS_SESSION_BUS_ADDRESS=unix:path="+filepath.Join(home, "nowhere", "bus"))
			}
			cmd := exec.Command(bin, tc.args...)
			cmd.Env = env
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, &stderr)
				}
			}
			// systemctl's raw failure is not the message
			if all := stdout.String() + stderr.String(); strings.Contains(all, "exit status") || strings.Contains(all, "Failed to connect") {
				t.Errorf("raw service manager error shown:\n%s", all)
			}
			if _, err := os.Stat(filepath.Join(home, ".config", "systemd", "user", "opengeni-agent.service")); err == nil {
				t.Error("a unit was written although the service manager is unavailable")
			}
		})
	}
}

// needs is a skip reason when a real tool the case runs is missing.
func needs(ok bool) string {
	if ok {
		return ""
	}
	return "SKIP (not a pass): systemctl is missing, or systemd runs as init here"
}
