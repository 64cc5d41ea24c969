package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnavailable: every way systemctl says it cannot reach its
// manager is ErrUnavailable with the reason and what to do; a manager that
// answers with a failure stays a plain error; Install writes nothing.
func TestSystemdUnavailable(t *testing.T) {
	failing := func(out string, err error) Runner {
		return func(_ context.Context, name string, args ...string) (string, error) {
			if name != "systemctl" {
				return "", nil
			}
			return out, err
		}
	}
	exit1 := errors.New("exit status 1")
	cases := []struct {
		name   string
		scope  Scope
		env    map[string]string
		out    string
		err    error
		reason string // "" = not unavailable
	}{
		{"no XDG_RUNTIME_DIR (systemd 252)", User, nil, "Failed to connect to bus: No medium found", exit1, "no user bus: $XDG_RUNTIME_DIR is not set"},
		{"no socket", User, map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, "Failed to connect to bus: No such file or directory", exit1, "no user bus: nothing answers at XDG_RUNTIME_DIR=/run/user/1000"},
		{"systemd 254+", User, nil, "Failed to connect to user scope bus via local transport: $DBUS_SESSION_BUS_ADDRESS and $XDG_RUNTIME_DIR not defined (consider using --machine=<user>@.host --user to connect to bus of other user)", exit1, "no user bus: $XDG_RUNTIME_DIR is not set"},
		{"old systemd", User, nil, "Failed to get D-Bus connection: Connection refused", exit1, "no user bus: $XDG_RUNTIME_DIR is not set"},
		{"container init", System, nil, "System has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down", exit1, "systemd is not running as the init system"},
		{"system bus down", System, nil, "Failed to connect to bus: Connection refused", exit1, "no system bus"},
		{"no systemctl", User, nil, "", fmt.Errorf("systemctl --user show: %w", exec.ErrNotFound), "systemctl is not installed"},
		{"manager refuses", User, nil, "Access denied", exit1, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			o := Options{GOOS: "linux", Scope: tc.scope, Home: home, BinaryPath: "/opt/og/opengeni-agent",
				Getenv: envOf(tc.env), Run: failing(tc.out, tc.err), Warn: func(string) {}}
			_, err := Status(context.Background(), o)
			var u *UnavailableError
			if tc.reason == "" {
				if err == nil || errors.Is(err, ErrUnavailable) {
					t.Fatalf("err = %v, want a plain failure", err)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) || !errors.As(err, &u) || u.Reason != tc.reason || !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want unavailable (%s) wrapping %v", err, tc.reason, tc.err)
			}
			if !strings.Contains(err.Error(), "opengeni-agent run` in a terminal") {
				t.Fatalf("no advice in %q", err)
			}
			if strings.HasPrefix(tc.reason, "no user bus") && !strings.Contains(err.Error(), "enable-linger") {
				t.Fatalf("no linger advice in %q", err)
			}
			if _, err := Install(context.Background(), o); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("install: %v", err)
			}
			if ents, _ := os.ReadDir(home); len(ents) != 0 {
				t.Fatalf("install wrote %v", ents)
			}
		})
	}
}

// TestSystemdUnavailableRealSystemctl asks the real systemctl for the user
// manager with the bus variables pointing nowhere.
func TestSystemdUnavailableRealSystemctl(t *testing.T) {
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Skip("SKIP (not a pass): systemctl is not installed")
	}
	nowhere := filepath.Join(t.TempDir(), "nowhere")
	t.Setenv("XDG_RUNTIME_DIR", nowhere)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+nowhere+"/bus")
	_, err := Status(context.Background(), Options{GOOS: "linux", Home: t.TempDir(), BinaryPath: "/opt/og/opengeni-agent"})
	var u *UnavailableError
	if !errors.As(err, &u) || u.Reason != "no user bus: nothing answers at XDG_RUNTIME_DIR="+nowhere {
		t.Fatalf("err = %v", err)
	}
}
