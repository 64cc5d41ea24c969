package service

import (
	"context"
	"fmt"
	"os"
)

// Reconcile brings the installed service definition of o.Scope up to what
// this binary renders: a fleet update's new binary runs it (hidden
// `service reconcile`) before the old process exits for the service
// manager, so the manager starts the new binary under the new definition
// (a unit that delegates a cgroup subtree, say). It installs, starts and
// restarts nothing; without an installed definition it does nothing.
// systemd re-reads a changed unit (daemon-reload); launchd reads a changed
// plist at the next bootstrap (login or boot), not at a KeepAlive restart;
// the Windows definitions live in the SCM and Task Scheduler and are left
// to `service install`. It reports whether the definition was rewritten.
func Reconcile(ctx context.Context, o Options) (bool, error) {
	o, err := o.withDefaults()
	if err != nil {
		return false, err
	}
	if o.GOOS == "windows" {
		return false, nil
	}
	def, err := Render(o)
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(def.Path); err != nil {
		return false, nil // not installed in this scope
	}
	changed, err := writeIfChanged(def.Path, def.Content, 0o644)
	if err != nil {
		return false, fmt.Errorf("rewrite %s: %w", def.Path, err)
	}
	if changed && o.GOOS == "linux" {
		if _, err := (systemd{}).ctl(ctx, o, "daemon-reload"); err != nil {
			return true, err
		}
	}
	return changed, nil
}
