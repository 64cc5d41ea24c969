package service

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost simulates systemctl/loginctl/launchctl well enough to check what
// Install decides; the real service managers are exercised by
// TestSystemdVerify (units) and by hand on macOS/Windows.
type fakeHost struct {
	calls   []string
	loaded  bool
	running bool
}

func (f *fakeHost) run(_ context.Context, name string, args ...string) (string, error) {
	cmd := strings.TrimSpace(name + " " + strings.Join(args, " "))
	f.calls = append(f.calls, cmd)
	verb := ""
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			verb = a
			break
		}
	}
	switch name {
	case "systemctl":
		switch verb {
		case "show":
			state := "inactive"
			if f.running {
				state = "active"
			}
			load := "not-found"
			if f.loaded {
				load = "loaded"
			}
			return "LoadState=" + load + "\nActiveState=" + state + "\nSubState=x", nil
		case "enable", "daemon-reload":
			f.loaded = true
		case "start", "restart":
			f.running = true
		case "stop":
			f.running = false
		}
	case "launchctl":
		switch verb {
		case "print":
			if !f.loaded {
				return "", errors.New("not found")
			}
			if f.running {
				return "state = running", nil
			}
			return "state = not running", nil
		case "bootstrap":
			f.loaded, f.running = true, true
		case "bootout":
			f.loaded, f.running = false, false
		case "kickstart":
			f.running = true
		}
	}
	return "", nil
}

func (f *fakeHost) took(verb string) bool {
	for _, c := range f.calls {
		if strings.Contains(c, " "+verb+" ") || strings.HasSuffix(c, " "+verb) {
			return true
		}
	}
	return false
}

func TestInstallIsIdempotentSystemd(t *testing.T) {
	home := t.TempDir()
	h := &fakeHost{}
	o := Options{GOOS: "linux", Home: home, BinaryPath: "/opt/og/opengeni-agent", Getenv: envOf(map[string]string{"USER": "ada"}), Run: h.run, Warn: func(string) {}}
	ctx := context.Background()

	res, err := Install(ctx, o)
	if err != nil || !res.Changed || !res.Started || res.Restarted {
		t.Fatalf("first install: %+v %v", res, err)
	}
	unit := filepath.Join(home, ".config/systemd/user", UnitName)
	if _, err := os.Stat(unit); err != nil {
		t.Fatal(err)
	}
	if !h.took("enable-linger") || !strings.Contains(strings.Join(h.calls, "\n"), "systemctl --user enable "+UnitName) {
		t.Fatalf("calls %v", h.calls)
	}

	// same definition, agent running: nothing rewritten, nothing restarted
	st, _ := os.Stat(unit)
	h.calls = nil
	res, err = Install(ctx, o)
	if err != nil || res.Changed || res.Started || res.Restarted || h.took("restart") || h.took("daemon-reload") {
		t.Fatalf("re-install: %+v %v calls %v", res, err, h.calls)
	}
	if st2, _ := os.Stat(unit); !st2.ModTime().Equal(st.ModTime()) {
		t.Fatal("unit rewritten")
	}

	// a damaged definition is repaired, and the running agent restarted onto it
	os.WriteFile(unit, []byte("garbage"), 0o644)
	h.calls = nil
	res, err = Install(ctx, o)
	if err != nil || !res.Changed || !res.Restarted || !h.took("daemon-reload") {
		t.Fatalf("repair: %+v %v calls %v", res, err, h.calls)
	}

	// --restart restarts an unchanged running agent
	h.calls = nil
	o.Restart = true
	if res, err = Install(ctx, o); err != nil || res.Changed || !res.Restarted {
		t.Fatalf("--restart: %+v %v", res, err)
	}
	o.Restart = false

	// stopped agent: install starts it
	h.running = false
	if res, err = Install(ctx, o); err != nil || !res.Started {
		t.Fatalf("stopped: %+v %v", res, err)
	}

	if s, err := Status(ctx, o); err != nil || !s.Installed || !s.Running {
		t.Fatalf("status %+v %v", s, err)
	}
	if err := Uninstall(ctx, o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(unit); !os.IsNotExist(err) {
		t.Fatal("unit left behind")
	}
}

func TestInstallPrintTouchesNothing(t *testing.T) {
	for _, goos := range []string{"linux", "darwin", "windows"} {
		home := t.TempDir()
		h := &fakeHost{}
		var out bytes.Buffer
		o := Options{GOOS: goos, Home: home, BinaryPath: "/opt/og/opengeni-agent", Getenv: envOf(map[string]string{"LOCALAPPDATA": home + "/la"}), Run: h.run, Print: true, Out: &out}
		res, err := Install(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		def, _ := Render(o)
		if out.String() != string(def.Content) || res.Changed {
			t.Fatalf("%s: printed %q", goos, out.String())
		}
		if len(h.calls) != 0 {
			t.Fatalf("%s: ran %v", goos, h.calls)
		}
		if ents, _ := os.ReadDir(home); len(ents) != 0 {
			t.Fatalf("%s: wrote into home: %v", goos, ents)
		}
	}
}

func TestInstallIsIdempotentLaunchd(t *testing.T) {
	home := t.TempDir()
	h := &fakeHost{}
	o := Options{GOOS: "darwin", Home: home, BinaryPath: "/opt/og/opengeni-agent", Getenv: envOf(map[string]string{"UID": "501"}), Run: h.run}
	ctx := context.Background()
	res, err := Install(ctx, o)
	if err != nil || !res.Changed || !res.Started {
		t.Fatalf("first: %+v %v", res, err)
	}
	if !strings.Contains(strings.Join(h.calls, "\n"), "launchctl bootstrap gui/501 "+filepath.Join(home, "Library/LaunchAgents", Label+".plist")) {
		t.Fatalf("calls %v", h.calls)
	}
	if _, err := os.Stat(filepath.Join(home, "Library/Logs/OpenGeni")); err != nil {
		t.Fatal("log dir not created")
	}
	h.calls = nil
	res, err = Install(ctx, o)
	if err != nil || res.Changed || res.Restarted || h.took("bootout") || h.took("bootstrap") {
		t.Fatalf("re-install: %+v %v %v", res, err, h.calls)
	}
	o.BinaryPath = "/opt/og2/opengeni-agent"
	res, err = Install(ctx, o)
	if err != nil || !res.Changed || !res.Restarted || !h.took("bootout") {
		t.Fatalf("changed: %+v %v %v", res, err, h.calls)
	}
}
