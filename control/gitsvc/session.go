package gitsvc

import (
	"context"
	"errors"
	"slices"

	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// SessionRunner runs commands on the machine behind a control session:
// argv is executed without a shell, workdir is a platform path (mapped by
// the session like every exec cwd).
//
// Git runs through exec, as control.md §4.3 specifies, so the machine's own
// git answers byte for byte. When exec finds no git binary (common on
// Windows), the command goes to the agent's git op instead, which serves
// status from its built-in go-git: structured status then works on such a
// machine, and the queries go-git cannot answer fail with the agent's
// UNSUPPORTED error rather than a bare "spawn git: not found".
func SessionRunner(s *control.Session) Runner { return sessionRunner{s} }

type sessionRunner struct{ s *control.Session }

func (r sessionRunner) Run(ctx context.Context, workdir string, argv []string) ([]byte, []byte, int, error) {
	resp, err := r.s.ExecArgs(ctx, control.ExecRequestOptions{Argv: argv, Workdir: workdir})
	if err != nil {
		if len(argv) > 0 && argv[0] == "git" && isNotFound(err) {
			return r.gitOp(ctx, workdir, argv[1:])
		}
		return nil, nil, 0, err
	}
	return resp.GetStdout(), resp.GetStderr(), int(resp.GetExitCode()), nil
}

// ListDirs lists dir's subdirectories with the fs ops.
func (r sessionRunner) ListDirs(ctx context.Context, dir string) ([]string, error) {
	ents, err := r.s.ListDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range ents {
		if e.Type == control.EntryDir {
			dirs = append(dirs, e.Name)
		}
	}
	return dirs, nil
}

// gitOp runs git args through the agent's git op.
func (r sessionRunner) gitOp(ctx context.Context, workdir string, args []string) ([]byte, []byte, int, error) {
	call := gitOpFor(args)
	resp, err := r.s.Git(ctx, call.op, workdir, call.args...)
	if err != nil {
		return nil, nil, 0, err
	}
	stdout := resp.GetStdout()
	if call.insideWorkTree && resp.GetExitCode() == 0 {
		stdout = []byte("true\n")
	}
	return stdout, resp.GetStderr(), int(resp.GetExitCode()), nil
}

// gitOpCall is a git command expressed as the agent's git op.
type gitOpCall struct {
	op   agentpb.GitOp
	args []string
	// insideWorkTree: the command was `rev-parse --is-inside-work-tree`,
	// answered by `branch --show-current` (which the built-in git serves,
	// and which fails outside a work tree): exit 0 prints "true".
	insideWorkTree bool
}

// gitOpFor maps git's argv (without "git") onto the git op: the
// subcommands the op has its own case for go there (status without the
// flags the op adds itself), everything else is RAW.
func gitOpFor(args []string) gitOpCall {
	if slices.Equal(args, []string{"rev-parse", "--is-inside-work-tree"}) {
		return gitOpCall{op: agentpb.GitOp_GIT_OP_BRANCH, args: []string{"--show-current"}, insideWorkTree: true}
	}
	if len(args) == 0 {
		return gitOpCall{op: agentpb.GitOp_GIT_OP_RAW}
	}
	switch args[0] {
	case "status":
		rest := slices.DeleteFunc(slices.Clone(args[1:]), func(a string) bool { return a == "--porcelain=v2" || a == "--branch" })
		return gitOpCall{op: agentpb.GitOp_GIT_OP_STATUS, args: rest}
	case "diff":
		return gitOpCall{op: agentpb.GitOp_GIT_OP_DIFF, args: args[1:]}
	case "log":
		return gitOpCall{op: agentpb.GitOp_GIT_OP_LOG, args: args[1:]}
	}
	return gitOpCall{op: agentpb.GitOp_GIT_OP_RAW, args: args}
}

// isNotFound: the machine reported NOT_FOUND for the spawn (no such
// program, or no such cwd, which the git op reports the same way). Other
// runners never report it.
func isNotFound(err error) bool {
	var ce *control.Error
	return errors.As(err, &ce) && ce.OSNotFound
}
