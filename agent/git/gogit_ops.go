package git

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// gitDateFormat is git's default date format.
const gitDateFormat = "Mon Jan 2 15:04:05 2006 -0700"

// logOp answers GIT_OP_LOG in git's default (or --oneline) format.
func logOp(_ context.Context, rp *repo, args []string) (*result, error) {
	maxCount, skip, oneline := -1, 0, false
	var rev string
	var paths []string
	args, after := cutDashDash(args)
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--oneline":
			oneline = true
		case a == "-n" && i+1 < len(args):
			i++
			n, err := strconv.Atoi(args[i])
			if err != nil {
				return new(result).fatal("'%s': not an integer", args[i]), nil
			}
			maxCount = n
		case strings.HasPrefix(a, "--max-count=") || strings.HasPrefix(a, "-n") || (len(a) > 1 && a[0] == '-' && isDigits(a[1:])):
			v := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(a, "--max-count="), "-n"), "-")
			n, err := strconv.Atoi(v)
			if err != nil {
				return new(result).fatal("'%s': not an integer", v), nil
			}
			maxCount = n
		case strings.HasPrefix(a, "--skip="):
			n, err := strconv.Atoi(strings.TrimPrefix(a, "--skip="))
			if err != nil {
				return new(result).fatal("'%s': not an integer", a), nil
			}
			skip = n
		case a == "--no-color" || a == "--no-decorate":
		case strings.HasPrefix(a, "-"):
			return nil, unsupportedArg("log", a)
		case rev == "":
			rev = a
		default:
			paths = append(paths, a)
		}
	}
	paths = append(paths, after...)
	res := new(result)
	var from plumbing.Hash
	if rev == "" {
		h, err := headCommitHash(rp)
		if err != nil {
			return nil, err
		}
		if h.IsZero() {
			return res.fatal("your current branch '%s' does not have any commits yet", currentBranch(rp)), nil
		}
		from = h
	} else {
		h, err := rp.r.ResolveRevision(plumbing.Revision(rev))
		if err != nil {
			return res.fatal("ambiguous argument '%s': unknown revision or path not in the working tree.", rev), nil
		}
		from = *h
	}
	specs := rp.fromCwdAll(paths)
	iter, err := rp.r.Log(&gogit.LogOptions{From: from, Order: gogit.LogOrderCommitterTime})
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	defer iter.Close()
	n := 0
	fps := fingerprints{}
	err = iter.ForEach(func(c *object.Commit) error {
		if len(specs) > 0 && !touches(rp, c, specs, fps) {
			return nil
		}
		if skip > 0 {
			skip--
			return nil
		}
		if maxCount >= 0 && n >= maxCount {
			return io.EOF
		}
		if oneline {
			fmt.Fprintf(&res.stdout, "%s %s\n", c.Hash.String()[:7], subject(c.Message))
		} else {
			if n > 0 {
				res.stdout.WriteByte('\n')
			}
			writeCommit(res, c)
		}
		n++
		return nil
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("log: %w", err)
	}
	return res, nil
}

// fingerprints holds the pathHashes of parents already looked at, so that
// log, which reaches a commit after its children, computes each only once.
type fingerprints map[plumbing.Hash]string

// touches reports whether c changed any of the root-relative paths, with
// git's default history simplification: a merge counts only when it differs
// from every parent.
func touches(rp *repo, c *object.Commit, specs []string, fps fingerprints) bool {
	mine, ok := fps[c.Hash]
	if ok {
		delete(fps, c.Hash) // c's children are done: no one asks again
	} else {
		mine = pathHashes(c, specs)
	}
	if c.NumParents() == 0 {
		return mine != ""
	}
	for _, ph := range c.ParentHashes {
		theirs, ok := fps[ph]
		if !ok {
			p, err := rp.r.CommitObject(ph)
			if err != nil {
				return true
			}
			theirs = pathHashes(p, specs)
			fps[ph] = theirs
		}
		if theirs == mine {
			return false // TREESAME to a parent
		}
	}
	return true
}

// pathHashes fingerprints what c's tree holds at specs.
func pathHashes(c *object.Commit, specs []string) string {
	t, err := c.Tree()
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, s := range specs {
		if s == "" {
			b.WriteString(t.Hash.String())
			continue
		}
		if e, err := t.FindEntry(s); err == nil {
			b.WriteString(s + "=" + e.Hash.String() + ";")
		}
	}
	return b.String()
}

// writeCommit prints c the way `git log` does by default.
func writeCommit(res *result, c *object.Commit) {
	fmt.Fprintf(&res.stdout, "commit %s\n", c.Hash)
	if len(c.ParentHashes) > 1 {
		short := make([]string, len(c.ParentHashes))
		for i, p := range c.ParentHashes {
			short[i] = p.String()[:7]
		}
		fmt.Fprintf(&res.stdout, "Merge: %s\n", strings.Join(short, " "))
	}
	fmt.Fprintf(&res.stdout, "Author: %s <%s>\n", c.Author.Name, c.Author.Email)
	fmt.Fprintf(&res.stdout, "Date:   %s\n\n", c.Author.When.Format(gitDateFormat))
	for _, line := range strings.Split(strings.TrimRight(c.Message, "\n"), "\n") {
		fmt.Fprintf(&res.stdout, "    %s\n", line)
	}
}

func subject(msg string) string {
	s, _, _ := strings.Cut(strings.TrimLeft(msg, "\n"), "\n")
	return s
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// currentBranch is HEAD's branch name, or "" when detached.
func currentBranch(rp *repo) string {
	head, err := rp.r.Storer.Reference(plumbing.HEAD)
	if err != nil || head.Type() != plumbing.SymbolicReference {
		return ""
	}
	return head.Target().Short()
}

// addOp answers GIT_OP_ADD: paths (files or directories), "." or -A.
func addOp(_ context.Context, rp *repo, args []string) (*result, error) {
	all := false
	var paths []string
	args, after := cutDashDash(args)
	for _, a := range args {
		switch {
		case a == "-A" || a == "--all":
			all = true
		case strings.HasPrefix(a, "-"):
			return nil, unsupportedArg("add", a)
		default:
			paths = append(paths, a)
		}
	}
	paths = append(paths, after...)
	res := new(result)
	if len(paths) == 0 && !all {
		fmt.Fprintf(&res.stderr, "Nothing specified, nothing added.\n")
		return res, nil
	}
	if all && len(paths) == 0 {
		paths = []string{"."}
	}
	for _, p := range paths {
		rel := rp.fromCwd(p)
		if rel == "" {
			if err := rp.wt.AddWithOptions(&gogit.AddOptions{All: true}); err != nil {
				return nil, fmt.Errorf("add: %w", err)
			}
			continue
		}
		if _, err := os.Lstat(filepath.Join(rp.root, filepath.FromSlash(rel))); err != nil && !inIndex(rp, rel) {
			return res.fatal("pathspec '%s' did not match any files", p), nil
		}
		if err := rp.wt.AddWithOptions(&gogit.AddOptions{Path: rel}); err != nil {
			return nil, fmt.Errorf("add %s: %w", p, err)
		}
	}
	return res, nil
}

// inIndex reports whether rel (or a file below it) is tracked.
func inIndex(rp *repo, rel string) bool {
	idx, err := rp.r.Storer.Index()
	if err != nil {
		return false
	}
	for _, e := range idx.Entries {
		if e.Name == rel || strings.HasPrefix(e.Name, rel+"/") {
			return true
		}
	}
	return false
}

// commitOp answers GIT_OP_COMMIT: -m (repeatable), -a, --allow-empty,
// --amend; prints git's summary.
func commitOp(ctx context.Context, rp *repo, args []string) (*result, error) {
	var msgs []string
	opts := &gogit.CommitOptions{}
	quiet := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-m" || a == "--message":
			if i+1 >= len(args) {
				return new(result).usage("switch `m' requires a value"), nil
			}
			i++
			msgs = append(msgs, args[i])
		case strings.HasPrefix(a, "--message="):
			msgs = append(msgs, strings.TrimPrefix(a, "--message="))
		case strings.HasPrefix(a, "-m"):
			msgs = append(msgs, a[2:])
		case a == "-a" || a == "--all":
			opts.All = true
		case a == "--allow-empty":
			opts.AllowEmptyCommits = true
		case a == "--amend":
			opts.Amend = true
		case a == "-q" || a == "--quiet":
			quiet = true
		default:
			return nil, unsupportedArg("commit", a)
		}
	}
	res := new(result)
	if len(msgs) == 0 {
		return nil, unsupportedArg("commit", "without -m (no editor)")
	}
	author, committer, r := signatures(rp)
	if r != nil {
		return r, nil
	}
	opts.Author, opts.Committer = author, committer
	h, err := rp.wt.Commit(strings.Join(msgs, "\n\n")+"\n", opts)
	if errors.Is(err, gogit.ErrEmptyCommit) {
		fmt.Fprintf(&res.stdout, "On branch %s\nnothing to commit, working tree clean\n", currentBranch(rp))
		res.exit = 1
		return res, nil
	}
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if quiet {
		return res, nil
	}
	c, err := rp.r.CommitObject(h)
	if err != nil {
		return nil, fmt.Errorf("read new commit: %w", err)
	}
	where := currentBranch(rp)
	if where == "" {
		where = "detached HEAD"
	}
	if len(c.ParentHashes) == 0 {
		where += " (root-commit)"
	}
	fmt.Fprintf(&res.stdout, "[%s %s] %s\n", where, h.String()[:7], subject(c.Message))
	if stats, err := c.StatsContext(ctx); err == nil {
		adds, dels := 0, 0
		for _, s := range stats {
			adds += s.Addition
			dels += s.Deletion
		}
		fmt.Fprintf(&res.stdout, " %d %s changed", len(stats), plural(len(stats), "file", "files"))
		if adds > 0 || dels == 0 {
			fmt.Fprintf(&res.stdout, ", %d %s(+)", adds, plural(adds, "insertion", "insertions"))
		}
		if dels > 0 {
			fmt.Fprintf(&res.stdout, ", %d %s(-)", dels, plural(dels, "deletion", "deletions"))
		}
		res.stdout.WriteByte('\n')
	}
	return res, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// signatures resolves author and committer like git: GIT_AUTHOR_* and
// GIT_COMMITTER_* first, then user.name/user.email from the config.
func signatures(rp *repo) (author, committer *object.Signature, res *result) {
	var name, email string
	if cfg, err := rp.r.ConfigScoped(config.SystemScope); err == nil {
		name, email = cfg.User.Name, cfg.User.Email
	}
	now := time.Now()
	sig := func(kind string) *object.Signature {
		s := &object.Signature{Name: name, Email: email, When: now}
		if v := os.Getenv("GIT_" + kind + "_NAME"); v != "" {
			s.Name = v
		}
		if v := os.Getenv("GIT_" + kind + "_EMAIL"); v != "" {
			s.Email = v
		}
		return s
	}
	author, committer = sig("AUTHOR"), sig("COMMITTER")
	if author.Name == "" || author.Email == "" || committer.Name == "" || committer.Email == "" {
		r := new(result)
		fmt.Fprint(&r.stderr, "Author identity unknown\n\n*** Please tell me who you are.\n\n")
		return nil, nil, r.fatal("unable to auto-detect email address")
	}
	return author, committer, nil
}

// branchOp answers GIT_OP_BRANCH: list (-a, -r, --list), --show-current,
// create (name [start]) and delete (-d/-D name).
func branchOp(_ context.Context, rp *repo, args []string) (*result, error) {
	var del, showCurrent, all, remotes bool
	var names []string
	for _, a := range args {
		switch a {
		case "-d", "-D", "--delete":
			del = true
		case "--show-current":
			showCurrent = true
		case "-a", "--all":
			all = true
		case "-r", "--remotes":
			remotes = true
		case "--list", "--no-color":
		default:
			if strings.HasPrefix(a, "-") {
				return nil, unsupportedArg("branch", a)
			}
			names = append(names, a)
		}
	}
	res := new(result)
	switch {
	case showCurrent:
		if b := currentBranch(rp); b != "" {
			fmt.Fprintln(&res.stdout, b)
		}
	case del:
		if len(names) == 0 {
			return res.fatal("branch name required"), nil
		}
		for _, n := range names {
			ref, err := rp.r.Reference(plumbing.NewBranchReferenceName(n), false)
			if err != nil {
				fmt.Fprintf(&res.stderr, "error: branch '%s' not found.\n", n)
				res.exit = 1
				continue
			}
			if n == currentBranch(rp) {
				fmt.Fprintf(&res.stderr, "error: Cannot delete branch '%s' checked out at '%s'\n", n, rp.root)
				res.exit = 1
				continue
			}
			if err := rp.r.Storer.RemoveReference(ref.Name()); err != nil {
				return nil, fmt.Errorf("delete branch %s: %w", n, err)
			}
			fmt.Fprintf(&res.stdout, "Deleted branch %s (was %s).\n", n, ref.Hash().String()[:7])
		}
	case len(names) > 0:
		if len(names) > 2 {
			return nil, unsupportedArg("branch", strings.Join(names, " "))
		}
		name := plumbing.NewBranchReferenceName(names[0])
		if _, err := rp.r.Reference(name, false); err == nil {
			return res.fatal("a branch named '%s' already exists", names[0]), nil
		}
		start := "HEAD"
		if len(names) == 2 {
			start = names[1]
		}
		h, err := rp.r.ResolveRevision(plumbing.Revision(start))
		if err != nil {
			if start == "HEAD" {
				start = currentBranch(rp)
			}
			return res.fatal("not a valid object name: '%s'", start), nil
		}
		if err := rp.r.Storer.SetReference(plumbing.NewHashReference(name, *h)); err != nil {
			return nil, fmt.Errorf("create branch %s: %w", names[0], err)
		}
	default:
		if err := listBranches(res, rp, all, remotes); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func listBranches(res *result, rp *repo, all, remotes bool) error {
	head, _ := rp.r.Storer.Reference(plumbing.HEAD)
	if head != nil && head.Type() == plumbing.HashReference && !remotes {
		fmt.Fprintf(&res.stdout, "* (HEAD detached at %s)\n", head.Hash().String()[:7])
	}
	cur := currentBranch(rp)
	refs, err := rp.r.References()
	if err != nil {
		return fmt.Errorf("list references: %w", err)
	}
	var local, remote []string
	_ = refs.ForEach(func(ref *plumbing.Reference) error {
		switch {
		case ref.Name().IsBranch():
			local = append(local, ref.Name().Short())
		case ref.Name().IsRemote():
			remote = append(remote, ref.Name().String())
		}
		return nil
	})
	sort.Strings(local)
	sort.Strings(remote)
	if !remotes {
		for _, b := range local {
			mark := "  "
			if b == cur {
				mark = "* "
			}
			fmt.Fprintf(&res.stdout, "%s%s\n", mark, b)
		}
	}
	if all || remotes {
		for _, b := range remote {
			name := strings.TrimPrefix(b, "refs/remotes/")
			if all {
				name = "remotes/" + name
			}
			fmt.Fprintf(&res.stdout, "  %s\n", name)
		}
	}
	return nil
}

// checkoutOp answers GIT_OP_CHECKOUT: a branch, -b new [start], a commit
// (detached), or "-- paths" (restore from the index).
func checkoutOp(_ context.Context, rp *repo, args []string) (*result, error) {
	var create, force bool
	var names []string
	flags, paths := cutDashDash(args)
	for _, a := range flags {
		switch {
		case a == "-b":
			create = true
		case a == "-f" || a == "--force":
			force = true
		case strings.HasPrefix(a, "-"):
			return nil, unsupportedArg("checkout", a)
		default:
			names = append(names, a)
		}
	}
	res := new(result)
	if len(paths) > 0 {
		if len(names) > 0 {
			return nil, unsupportedArg("checkout", names[0]+" -- <paths>")
		}
		return restorePaths(res, rp, paths)
	}
	if len(names) == 0 || len(names) > 2 || (len(names) == 2 && !create) {
		return nil, unsupportedArg("checkout", strings.Join(args, " "))
	}
	opts := &gogit.CheckoutOptions{Force: force, Keep: !force}
	msg := ""
	switch {
	case create:
		opts.Branch, opts.Create = plumbing.NewBranchReferenceName(names[0]), true
		if _, err := rp.r.Reference(opts.Branch, false); err == nil {
			return res.fatal("a branch named '%s' already exists", names[0]), nil
		}
		if len(names) == 2 {
			h, err := rp.r.ResolveRevision(plumbing.Revision(names[1]))
			if err != nil {
				return res.fatal("'%s' is not a commit and a branch '%s' cannot be created from it", names[1], names[0]), nil
			}
			opts.Hash = *h
		}
		msg = fmt.Sprintf("Switched to a new branch '%s'\n", names[0])
	default:
		branch := plumbing.NewBranchReferenceName(names[0])
		if _, err := rp.r.Reference(branch, false); err == nil {
			if names[0] == currentBranch(rp) {
				fmt.Fprintf(&res.stderr, "Already on '%s'\n", names[0])
				return res, nil
			}
			opts.Branch = branch
			msg = fmt.Sprintf("Switched to branch '%s'\n", names[0])
		} else {
			h, err := rp.r.ResolveRevision(plumbing.Revision(names[0]))
			if err != nil {
				fmt.Fprintf(&res.stderr, "error: pathspec '%s' did not match any file(s) known to git\n", names[0])
				res.exit = 1
				return res, nil
			}
			opts.Hash = *h
			c, err := rp.r.CommitObject(*h)
			if err != nil {
				return nil, fmt.Errorf("read commit %s: %w", names[0], err)
			}
			msg = fmt.Sprintf("HEAD is now at %s %s\n", h.String()[:7], subject(c.Message))
		}
	}
	if !force {
		// git refuses to switch over local changes; go-git's Keep would
		// carry them silently, so check first.
		st, err := rp.wt.Status()
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		var dirty []string
		for p, f := range st {
			if (f.Worktree != gogit.Unmodified && f.Worktree != gogit.Untracked) || (f.Staging != gogit.Unmodified && f.Staging != gogit.Untracked) {
				dirty = append(dirty, p)
			}
		}
		if len(dirty) > 0 {
			sort.Strings(dirty)
			fmt.Fprintf(&res.stderr, "error: Your local changes to the following files would be overwritten by checkout:\n\t%s\nPlease commit your changes or stash them before you switch branches.\nAborting\n", strings.Join(dirty, "\n\t"))
			res.exit = 1
			return res, nil
		}
		opts.Keep = false
	}
	if err := rp.wt.Checkout(opts); err != nil {
		return nil, fmt.Errorf("checkout %s: %w", names[0], err)
	}
	res.stderr.WriteString(msg)
	return res, nil
}

// restorePaths discards worktree changes to paths (git checkout -- paths):
// each file is rewritten from its index blob.
func restorePaths(res *result, rp *repo, paths []string) (*result, error) {
	idx, err := rp.r.Storer.Index()
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	for _, p := range paths {
		rel := rp.fromCwd(p)
		matched := false
		for _, e := range idx.Entries {
			if rel != "" && e.Name != rel && !strings.HasPrefix(e.Name, rel+"/") {
				continue
			}
			matched = true
			b, err := readBlob(rp, e.Name, e.Mode, e.Hash)
			if err != nil {
				return nil, err
			}
			full := filepath.Join(rp.root, filepath.FromSlash(e.Name))
			perm := os.FileMode(0o644)
			if e.Mode == 0o100755 {
				perm = 0o755
			}
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				return nil, fmt.Errorf("restore %s: %w", e.Name, err)
			}
			if err := os.WriteFile(full, b.content, perm); err != nil {
				return nil, fmt.Errorf("restore %s: %w", e.Name, err)
			}
		}
		if !matched {
			fmt.Fprintf(&res.stderr, "error: pathspec '%s' did not match any file(s) known to git\n", p)
			res.exit = 1
		}
	}
	return res, nil
}
