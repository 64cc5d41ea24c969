package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
)

// unitPath is where the systemd unit lives for o.Scope.
func unitPath(o Options) string {
	if o.Scope == System {
		return "/etc/systemd/system/" + UnitName
	}
	if x := o.Getenv("XDG_CONFIG_HOME"); x != "" {
		return x + "/systemd/user/" + UnitName
	}
	return o.Home + "/.config/systemd/user/" + UnitName
}

// renderSystemd renders the unit. Restart=on-failure with an exponential
// RestartSec backoff (RestartSteps/RestartMaxDelaySec need systemd ≥ 254;
// older versions ignore them and keep the flat 5 s), and the start-rate
// limit in [Unit], where systemd reads it. A clean exit (the agent was
// stopped, or another instance already runs) is not restarted. Logs go to
// journald (stdout/stderr → journal, tagged opengeni-agent).
//
// Delegate=yes hands the unit's cgroup to the agent for per-op resource
// limits (internal/cgroup); DelegateSubgroup=supervisor (systemd ≥ 254)
// starts the agent in a subgroup, because cgroup v2 lets a cgroup give
// memory and cpu to children only while it holds no process itself. Older
// systemd ignores the key and the agent moves itself there. A user unit gets
// only the controllers its user manager has (user@.service's Delegate=:
// pids memory cpu on systemd 252; older versions may lack cpu; see
// agent/README.md for the drop-in).
func renderSystemd(o Options) Definition {
	target := "default.target"
	if o.Scope == System {
		target = "multi-user.target"
	}
	var b strings.Builder
	b.WriteString(`# Written by "opengeni-agent service install"; re-run it to repair.
[Unit]
Description=OpenGeni agent
Documentation=https://get.opengeni.ai
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
`)
	fmt.Fprintf(&b, "ExecStart=%s\n", systemdCommand(append([]string{o.BinaryPath}, o.Args...)))
	b.WriteString(`Restart=on-failure
RestartSec=5
RestartSteps=6
RestartMaxDelaySec=300
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=30
StandardOutput=journal
StandardError=journal
SyslogIdentifier=opengeni-agent
# Per-op memory/CPU limits: the agent runs in its own "supervisor" subgroup
# and puts each limited exec and git in a leaf beside it.
Delegate=yes
DelegateSubgroup=supervisor
`)
	if o.Scope == System {
		// systemd-oomd leaves the agent's unit alone (honoured for
		// root-owned cgroups only, so not written into a user unit).
		b.WriteString("ManagedOOMPreference=avoid\n")
	}
	b.WriteString(`
[Install]
`)
	fmt.Fprintf(&b, "WantedBy=%s\n", target)
	return Definition{Path: unitPath(o), Content: []byte(b.String())}
}

// systemdCommand quotes a command line for ExecStart: words with spaces,
// quotes or backslashes are double-quoted with C escapes, and the
// specifier '%' and variable '$' characters are doubled.
func systemdCommand(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		a = strings.ReplaceAll(a, "%", "%%")
		a = strings.ReplaceAll(a, "$", "$$")
		if a == "" || strings.ContainsAny(a, " \t\"'\\;") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

type systemd struct{}

func (systemd) ctl(ctx context.Context, o Options, args ...string) (string, error) {
	if o.Scope == User {
		args = append([]string{"--user"}, args...)
	}
	out, err := o.Run(ctx, "systemctl", args...)
	if err != nil {
		if u := systemdUnavailable(o, out, err); u != nil {
			return out, u
		}
	}
	return out, err
}

// busFailures are systemctl's words when it cannot talk to the manager at
// all (as opposed to the manager refusing an operation).
var busFailures = []string{
	"Failed to connect to bus",                       // no socket at $XDG_RUNTIME_DIR/bus or $DBUS_SESSION_BUS_ADDRESS
	"Failed to connect to user scope bus",            // systemd ≥ 254 without $XDG_RUNTIME_DIR
	"Failed to get D-Bus connection",                 // older systemd
	"System has not been booted with systemd",        // a container whose PID 1 is not systemd
	"$DBUS_SESSION_BUS_ADDRESS and $XDG_RUNTIME_DIR", // both unset
}

// runInTerminal is the fallback every unavailable service manager shares.
const runInTerminal = "run `opengeni-agent run` in a terminal (or under this host's own supervisor) instead"

// systemdUnavailable classifies a failed systemctl call: an *UnavailableError
// when systemctl is missing or cannot reach its manager, nil otherwise.
func systemdUnavailable(o Options, out string, err error) error {
	if errors.Is(err, exec.ErrNotFound) {
		return &UnavailableError{Reason: "systemctl is not installed", Fix: runInTerminal, Err: err}
	}
	text := out + "\n" + err.Error()
	hit := false
	for _, f := range busFailures {
		if strings.Contains(text, f) {
			hit = true
			break
		}
	}
	if !hit {
		return nil
	}
	if strings.Contains(text, "not been booted with systemd") {
		return &UnavailableError{Reason: "systemd is not running as the init system", Fix: runInTerminal, Err: err}
	}
	if o.Scope == System {
		return &UnavailableError{Reason: "no system bus", Fix: runInTerminal, Err: err}
	}
	reason := "no user bus: $XDG_RUNTIME_DIR is not set"
	if d := o.Getenv("XDG_RUNTIME_DIR"); d != "" {
		reason = "no user bus: nothing answers at XDG_RUNTIME_DIR=" + d
	}
	return &UnavailableError{Reason: reason, Err: err,
		Fix: "run `opengeni-agent run` in a terminal, or log in with a session (or enable lingering: `loginctl enable-linger $USER`, then XDG_RUNTIME_DIR=/run/user/$(id -u)) and try again"}
}

func (s systemd) install(ctx context.Context, o Options, def Definition) (Result, error) {
	res := Result{Definition: def}
	// Reach the manager before writing anything: without it the unit
	// would sit on disk, never enabled.
	if _, err := s.status(ctx, o); err != nil {
		return res, err
	}
	changed, err := writeIfChanged(def.Path, def.Content, 0o644)
	if err != nil {
		return res, fmt.Errorf("write %s: %w", def.Path, err)
	}
	res.Changed = changed
	if changed {
		if _, err := s.ctl(ctx, o, "daemon-reload"); err != nil {
			return res, err
		}
	}
	if o.Scope == User {
		// Linger starts the user's manager at boot and keeps it after
		// logout, so the agent is there before anyone logs in. It needs
		// polkit permission on some systems: warn, do not fail.
		user := o.Getenv("USER")
		if user == "" {
			user = o.Getenv("LOGNAME")
		}
		if _, err := o.Run(ctx, "loginctl", "enable-linger", user); err != nil {
			o.Warn(fmt.Sprintf("could not enable linger (the agent will start at login, not at boot): %v", err))
		}
	}
	if _, err := s.ctl(ctx, o, "enable", UnitName); err != nil {
		return res, err
	}
	st, _ := s.status(ctx, o)
	switch {
	case !st.Running:
		if _, err := s.ctl(ctx, o, "start", UnitName); err != nil {
			return res, err
		}
		res.Started = true
	case changed || o.Restart:
		if _, err := s.ctl(ctx, o, "restart", UnitName); err != nil {
			return res, err
		}
		res.Restarted = true
	}
	return res, nil
}

func (s systemd) uninstall(ctx context.Context, o Options) error {
	_, _ = s.ctl(ctx, o, "disable", "--now", UnitName)
	if err := os.Remove(unitPath(o)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	_, _ = s.ctl(ctx, o, "daemon-reload")
	_, _ = s.ctl(ctx, o, "reset-failed", UnitName)
	if o.Unlinger && o.Scope == User {
		_, _ = o.Run(ctx, "loginctl", "disable-linger", o.Getenv("USER"))
	}
	return nil
}

func (s systemd) start(ctx context.Context, o Options) error {
	_, err := s.ctl(ctx, o, "start", UnitName)
	return err
}

func (s systemd) stop(ctx context.Context, o Options) error {
	_, err := s.ctl(ctx, o, "stop", UnitName)
	return err
}

func (s systemd) restart(ctx context.Context, o Options) error {
	_, err := s.ctl(ctx, o, "restart", UnitName)
	return err
}

func (s systemd) status(ctx context.Context, o Options) (State, error) {
	out, err := s.ctl(ctx, o, "show", "-p", "LoadState,ActiveState,SubState", UnitName)
	if err != nil {
		return State{Detail: out}, err
	}
	kv := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			kv[k] = v
		}
	}
	st := State{
		Installed: kv["LoadState"] != "" && kv["LoadState"] != "not-found",
		Running:   kv["ActiveState"] == "active",
		Detail:    strings.TrimSpace(kv["ActiveState"] + " (" + kv["SubState"] + ")"),
	}
	return st, nil
}
