// Package service installs and manages the agent as a background service
// the platform way (agent.md §6, style #13): a systemd unit on Linux
// (per-user by default, system-wide with Scope System), a launchd
// LaunchAgent/LaunchDaemon on macOS, and on Windows a logon scheduled task
// (per-user: it runs in the user's session, where the desktop is) or a
// Windows service registered with the SCM with recovery actions (system).
//
// Rendering is pure (Render, golden-tested for every platform); managing
// shells out to systemctl/loginctl/launchctl/schtasks or talks to the SCM.
// Install is idempotent: it rewrites the definition only when it changed
// and leaves an already running agent alone unless asked to restart.
//
// kardianos/service is used where it fits: the Windows service runtime
// (RunManaged: the SCM dispatcher, stop and shutdown notifications). It
// does not fit the rest: it has no per-user systemd linger, puts no
// StartLimit settings in [Unit], cannot print exactly what it would write,
// refuses to install over an existing service instead of repairing it, and
// its Windows recovery actions are one fixed delay. So definitions are
// rendered here, and the SCM is configured through x/sys/windows/svc/mgr.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Names of the service on every platform.
const (
	UnitName    = "opengeni-agent.service" // systemd
	Label       = "ai.opengeni.agent"      // launchd
	WindowsName = "OpengeniAgent"          // SCM service and scheduled task
	DisplayName = "OpenGeni Agent"
	Description = "OpenGeni agent: lets your OpenGeni workspace work on this machine"
)

// Scope is where the service is installed.
type Scope int

const (
	User   Scope = iota // the current user's session (default)
	System              // machine-wide; needs root/administrator
)

// ScopeFromFlag maps the --system flag to a Scope.
func ScopeFromFlag(system bool) Scope {
	if system {
		return System
	}
	return User
}

func (s Scope) String() string {
	if s == System {
		return "system"
	}
	return "user"
}

// ErrUnsupported is returned on an OS without a supported service manager.
var ErrUnsupported = errors.New("no supported service manager on this platform (use the foreground `run`)")

// ErrUnavailable matches an *UnavailableError: this platform has a service
// manager, but this process cannot reach it (no systemd user bus in a
// container or an su/sudo shell, systemd not running as init, systemctl
// missing). Nothing was changed.
var ErrUnavailable = errors.New("service manager unavailable")

// UnavailableError says why the service manager cannot be reached and what
// the user can do instead.
type UnavailableError struct {
	Reason string // what is missing, e.g. "no systemd user bus"
	Fix    string // what to do instead, as one sentence
	Err    error  // the service manager's own failure
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%v (%s): %s", ErrUnavailable, e.Reason, e.Fix)
}

// Is makes errors.Is(err, ErrUnavailable) hold.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }

// Runner runs an external command and returns its combined output.
type Runner func(ctx context.Context, name string, args ...string) (string, error)

// ExecRunner is the default Runner.
func ExecRunner(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		if s != "" {
			return s, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, s)
		}
		return s, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return s, nil
}

// Options configure every operation. Zero values get the defaults noted.
type Options struct {
	Scope Scope
	Print bool      // Install: write the definition to Out, touch nothing
	Out   io.Writer // default os.Stdout

	BinaryPath string   // default: this executable, symlinks resolved
	Args       []string // default ["run"] (+ --log-file on Windows)
	Restart    bool     // Install: restart even when unchanged and running

	// Seams for tests; defaults are the real host.
	GOOS     string              // default runtime.GOOS
	Home     string              // default os.UserHomeDir
	Getenv   func(string) string // default os.Getenv
	Run      Runner              // default ExecRunner
	Warn     func(string)        // non-fatal problems; default: stderr
	Unlinger bool                // Uninstall: also disable linger (never by default)
}

func (o Options) withDefaults() (Options, error) {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.GOOS == "" {
		o.GOOS = runtime.GOOS
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Run == nil {
		o.Run = ExecRunner
	}
	if o.Warn == nil {
		o.Warn = func(s string) { fmt.Fprintln(os.Stderr, "warning:", s) }
	}
	if o.Home == "" {
		h, err := os.UserHomeDir()
		if err != nil && o.Scope == User {
			return o, fmt.Errorf("resolve the home directory: %w", err)
		}
		o.Home = h
	}
	if o.BinaryPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("locate this executable: %w", err)
		}
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		o.BinaryPath = exe
	}
	if len(o.Args) == 0 {
		o.Args = []string{"run"}
		if o.GOOS == "windows" {
			o.Args = append(o.Args, "--log-file", LogFile(o))
		}
	}
	return o, nil
}

// LogFile is where the agent's log goes when the platform does not collect
// stdout itself (macOS: launchd redirects into it; Windows: the agent writes
// it). Linux logs go to journald and this returns "".
func LogFile(o Options) string {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	switch o.GOOS {
	case "darwin":
		if o.Scope == System {
			return "/Library/Logs/OpenGeni/agent.log"
		}
		return o.Home + "/Library/Logs/OpenGeni/agent.log"
	case "windows":
		if o.Scope == System {
			pd := getenv("ProgramData")
			if pd == "" {
				pd = `C:\ProgramData`
			}
			return pd + `\OpenGeni\logs\agent.log`
		}
		la := getenv("LOCALAPPDATA")
		if la == "" {
			la = o.Home + `\AppData\Local`
		}
		return la + `\OpenGeni\logs\agent.log`
	}
	return ""
}

// Definition is a rendered service definition.
type Definition struct {
	Path    string // file it is written to ("" for the Windows SCM)
	Content []byte // exactly what is written (or, for the SCM, the equivalent sc.exe commands)
}

// Render produces the definition for o.GOOS and o.Scope.
func Render(o Options) (Definition, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Definition{}, err
	}
	switch o.GOOS {
	case "linux":
		return renderSystemd(o), nil
	case "darwin":
		return renderLaunchd(o), nil
	case "windows":
		if o.Scope == System {
			return renderSCM(o), nil
		}
		return renderTask(o), nil
	}
	return Definition{}, ErrUnsupported
}

// Result reports what Install did.
type Result struct {
	Definition
	Changed   bool // the definition was (re)written
	Started   bool // the service was started (it was not running)
	Restarted bool // a running service was restarted (definition changed, or Restart)
}

// State is what Status found.
type State struct {
	Installed bool
	Running   bool
	Detail    string // the service manager's own words
}

func (s State) String() string {
	switch {
	case !s.Installed:
		return "not installed"
	case s.Running:
		return "running"
	}
	return "installed, not running"
}

// manager is one platform's service manager.
type manager interface {
	install(ctx context.Context, o Options, def Definition) (Result, error)
	uninstall(ctx context.Context, o Options) error
	start(ctx context.Context, o Options) error
	stop(ctx context.Context, o Options) error
	restart(ctx context.Context, o Options) error
	status(ctx context.Context, o Options) (State, error)
}

func managerFor(o Options) (manager, error) {
	switch o.GOOS {
	case "linux":
		return systemd{}, nil
	case "darwin":
		return launchd{}, nil
	case "windows":
		if o.Scope == System {
			return scm{}, nil
		}
		return task{}, nil
	}
	return nil, ErrUnsupported
}

func prepare(o Options) (Options, manager, error) {
	o, err := o.withDefaults()
	if err != nil {
		return o, nil, err
	}
	m, err := managerFor(o)
	return o, m, err
}

// Install writes (or with Print, prints) the definition, registers it with
// the service manager and makes sure the service runs. Re-running it only
// rewrites a changed definition and does not restart a running service
// whose definition is unchanged (unless o.Restart).
func Install(ctx context.Context, o Options) (Result, error) {
	o, m, err := prepare(o)
	if err != nil {
		return Result{}, err
	}
	def, err := Render(o)
	if err != nil {
		return Result{}, err
	}
	if o.Print {
		_, err := o.Out.Write(def.Content)
		return Result{Definition: def}, err
	}
	return m.install(ctx, o, def)
}

// Uninstall stops and removes the service; a missing service is not an error.
func Uninstall(ctx context.Context, o Options) error {
	o, m, err := prepare(o)
	if err != nil {
		return err
	}
	return m.uninstall(ctx, o)
}

// Start starts the installed service.
func Start(ctx context.Context, o Options) error {
	o, m, err := prepare(o)
	if err != nil {
		return err
	}
	return m.start(ctx, o)
}

// Stop stops the service (it stays installed and starts again at next login/boot).
func Stop(ctx context.Context, o Options) error {
	o, m, err := prepare(o)
	if err != nil {
		return err
	}
	return m.stop(ctx, o)
}

// Restart restarts the service (starts it when stopped).
func Restart(ctx context.Context, o Options) error {
	o, m, err := prepare(o)
	if err != nil {
		return err
	}
	return m.restart(ctx, o)
}

// Status reports whether the service is installed and running.
func Status(ctx context.Context, o Options) (State, error) {
	o, m, err := prepare(o)
	if err != nil {
		return State{}, err
	}
	return m.status(ctx, o)
}

// writeIfChanged writes data to path (mkdir -p) unless it already holds
// exactly data; it reports whether it wrote.
func writeIfChanged(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}
