package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Reconcile rewrites an installed but outdated definition and makes
// systemd re-read it, leaves a current one alone, and touches nothing
// where no service is installed (and never starts or restarts anything).
func TestReconcileRewritesOnlyAnInstalledOutdatedDefinition(t *testing.T) {
	home := t.TempDir()
	host := &fakeHost{}
	o := Options{GOOS: "linux", Home: home, BinaryPath: "/opt/og/opengeni-agent", Run: host.run,
		Getenv: func(string) string { return "" }, Warn: func(string) {}}
	unit := filepath.Join(home, ".config", "systemd", "user", UnitName)

	if changed, err := Reconcile(context.Background(), o); err != nil || changed || len(host.calls) != 0 {
		t.Fatalf("nothing installed: changed %v err %v calls %v", changed, err, host.calls)
	}
	if _, err := os.Stat(unit); !os.IsNotExist(err) {
		t.Fatalf("reconcile installed a unit: %v", err)
	}

	if err := os.MkdirAll(filepath.Dir(unit), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/old/opengeni-agent run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := Reconcile(context.Background(), o)
	if err != nil || !changed {
		t.Fatalf("outdated unit: changed %v err %v", changed, err)
	}
	want, _ := Render(Options{GOOS: "linux", Home: home, BinaryPath: "/opt/og/opengeni-agent", Scope: User})
	if got, _ := os.ReadFile(unit); string(got) != string(want.Content) {
		t.Fatalf("unit after reconcile:\n%s", got)
	}
	if strings.Join(host.calls, ";") != "systemctl --user daemon-reload" {
		t.Fatalf("calls %v", host.calls)
	}
	host.calls = nil
	if changed, err := Reconcile(context.Background(), o); err != nil || changed || len(host.calls) != 0 {
		t.Fatalf("current unit: changed %v err %v calls %v", changed, err, host.calls)
	}
}
