package service

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

func plistPath(o Options) string {
	if o.Scope == System {
		return "/Library/LaunchDaemons/" + Label + ".plist"
	}
	return o.Home + "/Library/LaunchAgents/" + Label + ".plist"
}

// renderLaunchd renders the plist: started at load (login for a
// LaunchAgent, boot for a LaunchDaemon), restarted when it exits
// unsuccessfully (KeepAlive/SuccessfulExit false) no more often than every
// ThrottleInterval seconds, stdout/stderr appended to the log file.
// A LaunchAgent runs in the user's GUI session, which screen capture needs.
func renderLaunchd(o Options) Definition {
	var b strings.Builder
	esc := func(s string) string {
		var e strings.Builder
		_ = xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by "opengeni-agent service install"; re-run it to repair. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + Label + `</string>
	<key>ProgramArguments</key>
	<array>
`)
	for _, a := range append([]string{o.BinaryPath}, o.Args...) {
		b.WriteString("\t\t<string>" + esc(a) + "</string>\n")
	}
	log := esc(LogFile(o))
	b.WriteString(`	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>10</integer>
	<key>ProcessType</key>
	<string>Interactive</string>
	<key>ExitTimeOut</key>
	<integer>30</integer>
	<key>StandardOutPath</key>
	<string>` + log + `</string>
	<key>StandardErrorPath</key>
	<string>` + log + `</string>
</dict>
</plist>
`)
	return Definition{Path: plistPath(o), Content: []byte(b.String())}
}

type launchd struct{}

func (launchd) domain(ctx context.Context, o Options) string {
	if o.Scope == System {
		return "system"
	}
	uid := strconv.Itoa(os.Getuid())
	if u := o.Getenv("UID"); u != "" {
		uid = u
	}
	return "gui/" + uid
}

func (l launchd) target(ctx context.Context, o Options) string {
	return l.domain(ctx, o) + "/" + Label
}

func (l launchd) install(ctx context.Context, o Options, def Definition) (Result, error) {
	res := Result{Definition: def}
	if err := os.MkdirAll(filepath.Dir(LogFile(o)), 0o755); err != nil {
		return res, err
	}
	changed, err := writeIfChanged(def.Path, def.Content, 0o644)
	if err != nil {
		return res, fmt.Errorf("write %s: %w", def.Path, err)
	}
	res.Changed = changed
	st, _ := l.status(ctx, o)
	if st.Installed && (changed || o.Restart) {
		// launchd reads the plist at bootstrap: reload it.
		_, _ = o.Run(ctx, "launchctl", "bootout", l.target(ctx, o))
		st = State{}
		res.Restarted = true
	}
	if !st.Installed {
		if _, err := o.Run(ctx, "launchctl", "bootstrap", l.domain(ctx, o), def.Path); err != nil {
			return res, err
		}
		_, _ = o.Run(ctx, "launchctl", "enable", l.target(ctx, o))
		res.Started = !res.Restarted
		return res, nil
	}
	if !st.Running {
		if _, err := o.Run(ctx, "launchctl", "kickstart", l.target(ctx, o)); err != nil {
			return res, err
		}
		res.Started = true
	}
	return res, nil
}

func (l launchd) uninstall(ctx context.Context, o Options) error {
	_, _ = o.Run(ctx, "launchctl", "bootout", l.target(ctx, o))
	if err := os.Remove(plistPath(o)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (l launchd) start(ctx context.Context, o Options) error {
	if st, _ := l.status(ctx, o); !st.Installed {
		if _, err := os.Stat(plistPath(o)); err != nil {
			return fmt.Errorf("the LaunchAgent is not installed: run `opengeni-agent service install`")
		}
		_, err := o.Run(ctx, "launchctl", "bootstrap", l.domain(ctx, o), plistPath(o))
		return err
	}
	_, err := o.Run(ctx, "launchctl", "kickstart", l.target(ctx, o))
	return err
}

func (l launchd) stop(ctx context.Context, o Options) error {
	// SIGTERM: the agent says GoingOffline and exits 0, which KeepAlive
	// (SuccessfulExit false) does not restart.
	_, err := o.Run(ctx, "launchctl", "kill", "SIGTERM", l.target(ctx, o))
	return err
}

func (l launchd) restart(ctx context.Context, o Options) error {
	if st, _ := l.status(ctx, o); !st.Installed {
		return l.start(ctx, o)
	}
	_, err := o.Run(ctx, "launchctl", "kickstart", "-k", l.target(ctx, o))
	return err
}

func (l launchd) status(ctx context.Context, o Options) (State, error) {
	out, err := o.Run(ctx, "launchctl", "print", l.target(ctx, o))
	if err != nil {
		return State{Detail: "not loaded"}, nil
	}
	st := State{Installed: true, Detail: "loaded"}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "state = "); ok {
			st.Detail = v
			st.Running = v == "running"
			break
		}
	}
	return st, nil
}
