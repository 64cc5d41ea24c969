package gitsvc

import (
	"context"

	"github.com/opengeni/opengeni-agent/control"
)

// SessionRunner runs git on the machine behind a control session: argv is
// executed without a shell, workdir is a platform path (mapped by the
// session like every exec cwd).
func SessionRunner(s *control.Session) Runner { return sessionRunner{s} }

type sessionRunner struct{ s *control.Session }

func (r sessionRunner) Run(ctx context.Context, workdir string, argv []string) ([]byte, []byte, int, error) {
	resp, err := r.s.ExecArgs(ctx, control.ExecRequestOptions{Argv: argv, Workdir: workdir})
	if err != nil {
		return nil, nil, 0, err
	}
	return resp.GetStdout(), resp.GetStderr(), int(resp.GetExitCode()), nil
}
