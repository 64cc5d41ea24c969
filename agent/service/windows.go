package service

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
	"unicode/utf16"
)

// Recovery actions of the Windows service: restart after 5 s, 10 s, then
// 30 s for every later failure; the failure count resets after a day.
var scmRecovery = []time.Duration{5 * time.Second, 10 * time.Second, 30 * time.Second}

const scmResetPeriod = 24 * time.Hour

// renderSCM shows the Windows service configuration as the sc.exe commands
// that produce it; the installer applies the same configuration through the
// SCM API.
func renderSCM(o Options) Definition {
	bin := winCommandLine(append([]string{o.BinaryPath}, o.Args...))
	var actions []string
	for _, d := range scmRecovery {
		actions = append(actions, fmt.Sprintf("restart/%d", d.Milliseconds()))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sc.exe create %s binPath= %s start= delayed-auto DisplayName= %s\n", WindowsName, winQuote(bin), winQuote(DisplayName))
	fmt.Fprintf(&b, "sc.exe description %s %s\n", WindowsName, winQuote(Description))
	fmt.Fprintf(&b, "sc.exe failure %s reset= %d actions= %s\n", WindowsName, int(scmResetPeriod.Seconds()), strings.Join(actions, "/"))
	fmt.Fprintf(&b, "sc.exe failureflag %s 1\n", WindowsName)
	return Definition{Content: []byte(b.String())}
}

// taskXMLPath is where the per-user scheduled task definition is kept (the
// Task Scheduler stores its own copy; this one makes re-install idempotent).
func taskXMLPath(o Options) string {
	la := o.Getenv("LOCALAPPDATA")
	if la == "" {
		la = o.Home + `\AppData\Local`
	}
	return la + `\OpenGeni\opengeni-agent-task.xml`
}

// renderTask renders the per-user Task Scheduler definition: started at the
// user's logon in the user's interactive session (where the desktop is),
// no time limit, one instance, restarted every minute after a failure.
func renderTask(o Options) Definition {
	esc := func(s string) string {
		var e strings.Builder
		_ = xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	user := o.Getenv("USERNAME")
	if d := o.Getenv("USERDOMAIN"); d != "" && user != "" {
		user = d + `\` + user
	}
	content := `<?xml version="1.0" encoding="UTF-16"?>
<!-- Written by "opengeni-agent service install"; re-run it to repair. -->
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>` + esc(Description) + `</Description>
    <URI>\` + WindowsName + `</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>` + esc(user) + `</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>` + esc(user) + `</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>` + esc(o.BinaryPath) + `</Command>
      <Arguments>` + esc(winCommandLine(o.Args)) + `</Arguments>
    </Exec>
  </Actions>
</Task>
`
	return Definition{Path: taskXMLPath(o), Content: []byte(content)}
}

// winQuote quotes one argument by the CommandLineToArgvW rules.
func winQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\v\"") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	slashes := 0
	for _, c := range s {
		switch c {
		case '\\':
			slashes++
			b.WriteByte('\\')
		case '"':
			// n backslashes before a quote become 2n+1 (n already written)
			b.WriteString(strings.Repeat(`\`, slashes+1))
			b.WriteByte('"')
			slashes = 0
		default:
			slashes = 0
			b.WriteRune(c)
		}
	}
	b.WriteString(strings.Repeat(`\`, slashes))
	b.WriteByte('"')
	return b.String()
}

func winCommandLine(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = winQuote(a)
	}
	return strings.Join(q, " ")
}

// utf16File encodes the task XML the way schtasks /XML expects it.
func utf16File(s string) []byte {
	u := utf16.Encode([]rune(strings.ReplaceAll(s, "\n", "\r\n")))
	out := []byte{0xFF, 0xFE}
	for _, c := range u {
		out = append(out, byte(c), byte(c>>8))
	}
	return out
}

// task manages the per-user scheduled task with schtasks.exe.
type task struct{}

func (task) install(ctx context.Context, o Options, def Definition) (Result, error) {
	res := Result{Definition: def}
	if err := os.MkdirAll(dirOf(LogFile(o)), 0o755); err != nil {
		return res, err
	}
	changed, err := writeIfChanged(def.Path, utf16File(string(def.Content)), 0o644)
	if err != nil {
		return res, fmt.Errorf("write %s: %w", def.Path, err)
	}
	res.Changed = changed
	st, _ := task{}.status(ctx, o)
	if changed || !st.Installed {
		if _, err := o.Run(ctx, "schtasks.exe", "/Create", "/TN", WindowsName, "/XML", def.Path, "/F"); err != nil {
			return res, err
		}
	}
	switch {
	case !st.Running:
		if _, err := o.Run(ctx, "schtasks.exe", "/Run", "/TN", WindowsName); err != nil {
			return res, err
		}
		res.Started = true
	case changed || o.Restart:
		if err := (task{}).restart(ctx, o); err != nil {
			return res, err
		}
		res.Restarted = true
	}
	return res, nil
}

func (task) uninstall(ctx context.Context, o Options) error {
	_, _ = o.Run(ctx, "schtasks.exe", "/End", "/TN", WindowsName)
	_, _ = o.Run(ctx, "schtasks.exe", "/Delete", "/TN", WindowsName, "/F")
	if err := os.Remove(taskXMLPath(o)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (task) start(ctx context.Context, o Options) error {
	_, err := o.Run(ctx, "schtasks.exe", "/Run", "/TN", WindowsName)
	return err
}

// stop ends the task. The Task Scheduler terminates the process, so a
// per-user agent stopped this way cannot say GoingOffline (the control
// plane sees it go away by heartbeat); the SCM service stops gracefully.
func (task) stop(ctx context.Context, o Options) error {
	_, err := o.Run(ctx, "schtasks.exe", "/End", "/TN", WindowsName)
	return err
}

func (t task) restart(ctx context.Context, o Options) error {
	_ = t.stop(ctx, o)
	return t.start(ctx, o)
}

func (task) status(ctx context.Context, o Options) (State, error) {
	installed, state, err := queryTask(ctx, WindowsName)
	if err != nil {
		return State{}, err
	}
	return taskStateOf(installed, state), nil
}

// The Task Scheduler's TASK_STATE values.
const (
	taskStateUnknown  = 0
	taskStateDisabled = 1
	taskStateQueued   = 2
	taskStateReady    = 3
	taskStateRunning  = 4
)

// taskStateOf maps the Task Scheduler's TASK_STATE (a number, the same in
// every display language) to a State.
func taskStateOf(installed bool, state int) State {
	if !installed {
		return State{Detail: "not installed"}
	}
	detail, ok := map[int]string{taskStateUnknown: "state unknown", taskStateDisabled: "disabled",
		taskStateQueued: "queued", taskStateReady: "ready", taskStateRunning: "running"}[state]
	if !ok {
		detail = fmt.Sprintf("state %d", state)
	}
	return State{Installed: true, Running: state == taskStateRunning, Detail: detail}
}

func dirOf(p string) string {
	if i := strings.LastIndexAny(p, `\/`); i >= 0 {
		return p[:i]
	}
	return "."
}
