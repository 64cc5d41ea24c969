package main

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/devstack"
)

// `relay ctl shell -- CMD` for a command that exits at once: the viewer
// usually reaches the relay after the agent closed the channel. It must
// still print the output and return the command's exit code (it used to
// wait forever, most runs).
func TestCtlShellCommandThatExitsAtOnce(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a unix shell")
	}
	isolate(t)
	dir := filepath.Join(t.TempDir(), "data")
	startStack(t, dir, devstack.Options{})

	for i := range 5 {
		done := make(chan ctlResult, 1)
		go func() { done <- ctl(t, "--data-dir", dir, "shell", "--", "sh", "-c", "echo hi; exit 3") }()
		select {
		case r := <-done:
			r.want(t, 3, "exited with code 3")
			if !strings.Contains(r.stdout, "hi") {
				t.Fatalf("run %d: stdout %q lacks the command's output", i, r.stdout)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("run %d: relay ctl shell did not return after the command exited", i)
		}
	}
}
