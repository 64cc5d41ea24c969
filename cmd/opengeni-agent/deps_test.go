package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The default agent links no cgo input library: robotgo is opt-in behind the
// robotgo build tag, so every binary cross-compiles with CGO_ENABLED=0.
func TestDefaultBuildDoesNotLinkRobotgo(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("SKIP (not a pass): the go tool is not on PATH")
	}
	for _, env := range []string{"CGO_ENABLED=0", "CGO_ENABLED=1"} {
		cmd := exec.Command(gobin, "list", "-deps", ".")
		cmd.Env = append(cmd.Environ(), env)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list (%s): %v", env, err)
		}
		if strings.Contains(string(out), "robotgo") {
			t.Fatalf("with %s the agent imports robotgo", env)
		}
	}
}
