package gitsvc

import (
	"context"
	"errors"
	"os/exec"
	"strings"
)

// execRunner runs commands on this machine, the way the agent would.
type execRunner struct{ env []string }

func (r execRunner) Run(ctx context.Context, workdir string, argv []string) ([]byte, []byte, int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = workdir
	cmd.Env = r.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return []byte(stdout.String()), []byte(stderr.String()), ee.ExitCode(), nil
	}
	if err != nil {
		return nil, nil, 0, err
	}
	return []byte(stdout.String()), []byte(stderr.String()), 0, nil
}
