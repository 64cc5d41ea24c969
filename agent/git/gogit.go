package git

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	gogit "github.com/go-git/go-git/v5"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/capture"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// result is what a go-git op prints, the way git would.
type result struct {
	stdout, stderr bytes.Buffer
	exit           int
	status         *agentpb.GitStatus
}

// fatal ends r the way git dies: "fatal: ..." on stderr, exit 128.
func (r *result) fatal(format string, args ...any) *result {
	fmt.Fprintf(&r.stderr, "fatal: "+format+"\n", args...)
	r.exit = 128
	return r
}

// usage ends r the way git rejects its arguments: exit 129.
func (r *result) usage(format string, args ...any) *result {
	fmt.Fprintf(&r.stderr, "error: "+format+"\n", args...)
	r.exit = 129
	return r
}

// response is r as a reply of at most limit output bytes, cut the way the CLI
// path cuts (the status only with the whole listing).
func (r *result) response(limit int) *agentpb.GitResponse {
	out, errs := capture.NewBuffer(limit), capture.NewBuffer(limit)
	out.Write(r.stdout.Bytes())
	errs.Write(r.stderr.Bytes())
	resp := &agentpb.GitResponse{ExitCode: int32(r.exit)}
	var truncated bool
	resp.Stdout, resp.Stderr, truncated = capture.Fit(out, errs, limit)
	if !truncated {
		resp.Status = r.status
	}
	return resp
}

// repo is an opened repository and where the request's cwd sits in it.
type repo struct {
	r      *gogit.Repository
	wt     *gogit.Worktree
	root   string // worktree root, OS path
	prefix string // cwd relative to root, slash-separated, "" at the root
}

// display maps a root-relative path to the cwd-relative form git prints.
func (rp *repo) display(p string) string {
	if rp.prefix == "" {
		return p
	}
	dir := strings.HasSuffix(p, "/")
	rel, err := filepath.Rel(filepath.FromSlash(rp.prefix), filepath.FromSlash(strings.TrimSuffix(p, "/")))
	if err != nil {
		return p
	}
	rel = filepath.ToSlash(rel)
	if dir {
		rel += "/"
	}
	return rel
}

// fromCwd maps a cwd-relative pathspec to a root-relative slash path.
func (rp *repo) fromCwd(p string) string {
	j := filepath.ToSlash(filepath.Clean(filepath.Join(filepath.FromSlash(rp.prefix), filepath.FromSlash(p))))
	if j == "." {
		return ""
	}
	return j
}

// fromCwdAll maps cwd-relative pathspecs to root-relative slash paths.
func (rp *repo) fromCwdAll(paths []string) []string {
	specs := make([]string, len(paths))
	for i, p := range paths {
		specs[i] = rp.fromCwd(p)
	}
	return specs
}

// goGitOps are the ops served without a git binary.
var goGitOps = map[agentpb.GitOp]func(ctx context.Context, rp *repo, args []string) (*result, error){
	agentpb.GitOp_GIT_OP_STATUS:   statusOp,
	agentpb.GitOp_GIT_OP_DIFF:     diffOp,
	agentpb.GitOp_GIT_OP_LOG:      logOp,
	agentpb.GitOp_GIT_OP_ADD:      addOp,
	agentpb.GitOp_GIT_OP_COMMIT:   commitOp,
	agentpb.GitOp_GIT_OP_BRANCH:   branchOp,
	agentpb.GitOp_GIT_OP_CHECKOUT: checkoutOp,
}

// goGit serves op with go-git, for a machine without a git binary.
func (s *Service) goGit(ctx context.Context, op agentpb.GitOp, dir string, args []string) (*agentpb.GitResponse, error) {
	fn := goGitOps[op]
	if fn == nil {
		return nil, agenterr.Unsupported("git %s: git is not installed on this machine", opName(op))
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	type outcome struct {
		res *result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := func() (*result, error) {
			rp, res := openRepo(dir)
			if res != nil {
				return res, nil
			}
			return fn(ctx, rp, args)
		}()
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			return nil, fmt.Errorf("git %s (go-git): %w", opName(op), o.err)
		}
		return o.res.response(s.outputLimit(ctx, op)), nil
	case <-ctx.Done():
		// go-git cannot be interrupted; its goroutine finishes on its own.
		return nil, s.ctxError(op, ctx.Err())
	}
}

// openRepo opens the repository holding dir, or returns git's answer for a
// directory outside any repository.
func openRepo(dir string) (*repo, *result) {
	r, err := gogit.PlainOpenWithOptions(dir, &gogit.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if err != nil {
		if errors.Is(err, gogit.ErrRepositoryNotExists) {
			return nil, new(result).fatal("not a git repository (or any of the parent directories): .git")
		}
		return nil, new(result).fatal("%v", err)
	}
	wt, err := r.Worktree()
	if err != nil {
		return nil, new(result).fatal("this operation must be run in a work tree")
	}
	rp := &repo{r: r, wt: wt, root: wt.Filesystem.Root()}
	if rel, err := filepath.Rel(rp.root, dir); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
		rp.prefix = filepath.ToSlash(rel)
	}
	return rp, nil
}

// cutDashDash splits args at the first "--": the options and revisions
// before it, the paths after it (nil without one).
func cutDashDash(args []string) (opts, paths []string) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:]
		}
	}
	return args, nil
}

// unsupportedArg is the answer for a flag the go-git path does not implement.
func unsupportedArg(op, arg string) error {
	return agenterr.Unsupported("git %s %s: git is not installed on this machine and the built-in git does not support this option", op, arg)
}
