package git

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/go-git/go-billy/v5/osfs"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// statusOptions are the `git status` arguments the go-git path honours.
type statusOptions struct {
	nul       bool
	untracked string // "no", "normal", "all"
	paths     []string
}

func parseStatusArgs(args []string) (statusOptions, error) {
	o := statusOptions{untracked: "normal"}
	args, after := cutDashDash(args)
	for _, a := range args {
		switch {
		case a == "-z" || a == "--null":
			o.nul = true
		case a == "-u" || a == "--untracked-files":
			o.untracked = "all"
		case strings.HasPrefix(a, "-u") || strings.HasPrefix(a, "--untracked-files="):
			mode := strings.TrimPrefix(strings.TrimPrefix(a, "--untracked-files="), "-u")
			switch mode {
			case "no", "normal", "all":
				o.untracked = mode
			default:
				return o, unsupportedArg("status", a)
			}
		case a == "--branch" || a == "-b" || a == "--porcelain=v2":
		case strings.HasPrefix(a, "-"):
			return o, unsupportedArg("status", a)
		default:
			o.paths = append(o.paths, a)
		}
	}
	o.paths = append(o.paths, after...)
	return o, nil
}

// statusOp answers GIT_OP_STATUS with porcelain v2 text built from go-git,
// parsed by the same parser as the git binary's output.
func statusOp(_ context.Context, rp *repo, args []string) (*result, error) {
	opts, err := parseStatusArgs(args)
	if err != nil {
		return nil, err
	}
	res := new(result)
	if err := writeStatus(&res.stdout, rp, opts); err != nil {
		return nil, err
	}
	res.status = parsePorcelainV2(res.stdout.Bytes())
	return res, nil
}

// statusEntry is one porcelain v2 record.
type statusEntry struct {
	kind       byte    // '1', '2', 'u' (untracked paths are listed apart)
	xy         [2]byte // v2 letters, '.' for unchanged
	sub        string
	mH, mI, mW filemode.FileMode
	hH, hI     plumbing.Hash
	path, orig string // root-relative, slash-separated
	stages     [3]*index.Entry
}

type treeFile struct {
	mode filemode.FileMode
	hash plumbing.Hash
}

// writeStatus prints `git status --porcelain=v2 --branch` for rp.
func writeStatus(w *bytes.Buffer, rp *repo, opts statusOptions) error {
	eol := "\n"
	if opts.nul {
		eol = "\x00"
	}
	headHash, err := writeBranchHeaders(w, rp, eol)
	if err != nil {
		return err
	}
	tracked, untracked, err := collectStatus(rp, headHash, opts)
	if err != nil {
		return err
	}
	q := func(p string) string {
		if opts.nul {
			return p // like git, -z prints paths from the repository root
		}
		return quoteC(rp.display(p))
	}
	for _, e := range tracked {
		switch e.kind {
		case '1':
			fmt.Fprintf(w, "1 %c%c %s %06o %06o %06o %s %s %s%s", e.xy[0], e.xy[1], e.sub, uint32(e.mH), uint32(e.mI), uint32(e.mW), e.hH, e.hI, q(e.path), eol)
		case '2':
			sep := "\t"
			if opts.nul {
				sep = "\x00"
			}
			fmt.Fprintf(w, "2 %c%c %s %06o %06o %06o %s %s R100 %s%s%s%s", e.xy[0], e.xy[1], e.sub, uint32(e.mH), uint32(e.mI), uint32(e.mW), e.hH, e.hI, q(e.path), sep, q(e.orig), eol)
		case 'u':
			var m [3]filemode.FileMode
			var h [3]plumbing.Hash
			for i, s := range e.stages {
				if s != nil {
					m[i], h[i] = s.Mode, s.Hash
				}
			}
			fmt.Fprintf(w, "u %c%c %s %06o %06o %06o %06o %s %s %s %s%s", e.xy[0], e.xy[1], e.sub, uint32(m[0]), uint32(m[1]), uint32(m[2]), uint32(e.mW), h[0], h[1], h[2], q(e.path), eol)
		}
	}
	for _, p := range untracked {
		fmt.Fprintf(w, "? %s%s", q(p), eol)
	}
	return nil
}

// writeBranchHeaders prints the "# branch.*" headers and returns HEAD's
// commit (zero in a repository with no commits).
func writeBranchHeaders(w *bytes.Buffer, rp *repo, eol string) (plumbing.Hash, error) {
	r := rp.r
	head, err := r.Storer.Reference(plumbing.HEAD)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read HEAD: %w", err)
	}
	var branch string
	var headHash plumbing.Hash
	if head.Type() == plumbing.SymbolicReference {
		branch = head.Target().Short()
		if ref, err := r.Reference(head.Target(), true); err == nil {
			headHash = ref.Hash()
		}
	} else {
		headHash = head.Hash()
	}
	oid := "(initial)"
	if !headHash.IsZero() {
		oid = headHash.String()
	}
	fmt.Fprintf(w, "# branch.oid %s%s", oid, eol)
	if branch == "" {
		fmt.Fprintf(w, "# branch.head (detached)%s", eol)
		return headHash, nil
	}
	fmt.Fprintf(w, "# branch.head %s%s", branch, eol)

	upstream, upRef := upstreamOf(rp, branch)
	if upstream == "" {
		return headHash, nil
	}
	fmt.Fprintf(w, "# branch.upstream %s%s", upstream, eol)
	if headHash.IsZero() {
		return headHash, nil
	}
	ref, err := r.Reference(upRef, true)
	if err != nil {
		return headHash, nil // upstream gone: git prints no branch.ab
	}
	ahead, behind, err := aheadBehind(r, headHash, ref.Hash())
	if err != nil {
		return headHash, fmt.Errorf("ahead/behind %s: %w", upstream, err)
	}
	fmt.Fprintf(w, "# branch.ab +%d -%d%s", ahead, behind, eol)
	return headHash, nil
}

// upstreamOf returns branch's upstream as git names it ("origin/main") and
// the local ref that tracks it, or "" when none is configured.
func upstreamOf(rp *repo, branch string) (string, plumbing.ReferenceName) {
	cfg, err := rp.r.Config()
	if err != nil {
		return "", ""
	}
	bc := cfg.Branches[branch]
	if bc == nil || bc.Merge == "" {
		return "", ""
	}
	if bc.Remote == "" || bc.Remote == "." {
		return bc.Merge.Short(), bc.Merge
	}
	rc := cfg.Remotes[bc.Remote]
	if rc == nil {
		return "", ""
	}
	for _, rs := range rc.Fetch {
		if rs.Match(bc.Merge) {
			dst := rs.Dst(bc.Merge)
			return strings.TrimPrefix(dst.String(), "refs/remotes/"), dst
		}
	}
	return "", ""
}

// collectStatus compares HEAD, the index and the worktree. tracked is in
// path order; untracked holds root-relative paths, directories with a
// trailing slash (collapsed like git's default -unormal).
func collectStatus(rp *repo, headHash plumbing.Hash, opts statusOptions) (tracked []*statusEntry, untracked []string, err error) {
	r := rp.r
	headFiles := map[string]treeFile{}
	if !headHash.IsZero() {
		c, err := r.CommitObject(headHash)
		if err != nil {
			return nil, nil, fmt.Errorf("read HEAD commit: %w", err)
		}
		tree, err := c.Tree()
		if err != nil {
			return nil, nil, fmt.Errorf("read HEAD tree: %w", err)
		}
		walker := object.NewTreeWalker(tree, true, nil)
		for {
			name, e, err := walker.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				walker.Close()
				return nil, nil, fmt.Errorf("walk HEAD tree: %w", err)
			}
			if e.Mode != filemode.Dir {
				headFiles[name] = treeFile{e.Mode, e.Hash}
			}
		}
		walker.Close()
	}
	idx, err := r.Storer.Index()
	if err != nil {
		return nil, nil, fmt.Errorf("read index: %w", err)
	}
	indexFiles := make(map[string]*index.Entry, len(idx.Entries))
	conflicts := map[string]*statusEntry{}
	trackedDirs := map[string]bool{}
	for _, e := range idx.Entries {
		for d := pathDir(e.Name); d != ""; d = pathDir(d) {
			if trackedDirs[d] {
				break
			}
			trackedDirs[d] = true
		}
		if e.Stage == 0 { // index.Merged is wrongly 1 in go-git
			indexFiles[e.Name] = e
			continue
		}
		ce := conflicts[e.Name]
		if ce == nil {
			ce = &statusEntry{kind: 'u', path: e.Name, sub: "N..."}
			conflicts[e.Name] = ce
		}
		if s := int(e.Stage) - 1; s >= 0 && s < 3 {
			ce.stages[s] = e
		}
	}

	// The worktree side (modified, deleted, untracked) comes from go-git,
	// which honours .gitignore, info/exclude and the global excludes.
	if ps, err := gitignore.LoadGlobalPatterns(osfs.New("/")); err == nil {
		rp.wt.Excludes = append(rp.wt.Excludes, ps...)
	}
	if ps, err := gitignore.LoadSystemPatterns(osfs.New("/")); err == nil {
		rp.wt.Excludes = append(rp.wt.Excludes, ps...)
	}
	wst, err := rp.wt.StatusWithOptions(gogit.StatusOptions{Strategy: gogit.Preload})
	if err != nil {
		return nil, nil, fmt.Errorf("worktree status: %w", err)
	}

	entries := map[string]*statusEntry{}
	get := func(p string) *statusEntry {
		e := entries[p]
		if e == nil {
			e = &statusEntry{kind: '1', path: p, xy: [2]byte{'.', '.'}, sub: "N..."}
			if h, ok := headFiles[p]; ok {
				e.mH, e.hH = h.mode, h.hash
			}
			if ie, ok := indexFiles[p]; ok {
				e.mI, e.hI = ie.Mode, ie.Hash
				e.mW = ie.Mode
			}
			entries[p] = e
		}
		return e
	}

	// HEAD against the index.
	for p, ie := range indexFiles {
		h, inHead := headFiles[p]
		switch {
		case !inHead:
			get(p).xy[0] = 'A'
		case h.hash != ie.Hash:
			get(p).xy[0] = 'M'
		case h.mode != ie.Mode:
			if modeType(h.mode) != modeType(ie.Mode) {
				get(p).xy[0] = 'T'
			} else {
				get(p).xy[0] = 'M'
			}
		}
	}
	for p := range headFiles {
		if _, ok := indexFiles[p]; ok {
			continue
		}
		if _, ok := conflicts[p]; ok {
			continue
		}
		get(p).xy[0] = 'D'
	}

	// The index against the worktree.
	var untrackedFiles []string
	for p, fsx := range wst {
		if _, ok := conflicts[p]; ok {
			continue
		}
		ie, inIndex := indexFiles[p]
		if !inIndex {
			if fsx.Worktree == gogit.Untracked && opts.untracked != "no" {
				untrackedFiles = append(untrackedFiles, p)
			}
			continue
		}
		switch fsx.Worktree {
		case gogit.Modified:
			e := get(p)
			e.xy[1] = 'M'
			e.mW = worktreeMode(rp.root, p, ie.Mode)
			if modeType(e.mW) != modeType(ie.Mode) {
				e.xy[1] = 'T'
			}
		case gogit.Deleted:
			e := get(p)
			e.xy[1] = 'D'
			e.mW = filemode.Empty
		}
	}

	// Submodules: git also reports a checked-out submodule whose content
	// changed, which go-git's comparison of commits does not see.
	for p, ie := range indexFiles {
		if ie.Mode != filemode.Submodule {
			continue
		}
		e := entries[p]
		commitChanged := e != nil && e.xy[1] == 'M'
		modified, untrackedContent := submoduleDirty(filepath.Join(rp.root, filepath.FromSlash(p)))
		if !commitChanged && !modified && !untrackedContent {
			if e != nil {
				e.sub = "S..."
			}
			continue
		}
		e = get(p)
		e.xy[1] = 'M'
		e.sub = "S" + flagChar(commitChanged, 'C') + flagChar(modified, 'M') + flagChar(untrackedContent, 'U')
	}
	for _, e := range entries {
		if e.sub == "N..." && (e.mH == filemode.Submodule || e.mI == filemode.Submodule) {
			e.sub = "S..."
		}
	}

	// Exact renames staged in the index (what `git mv` makes): an added path
	// whose blob is a deleted path's blob.
	deleted := map[plumbing.Hash][]*statusEntry{}
	for _, e := range entries {
		if e.xy[0] == 'D' {
			deleted[e.hH] = append(deleted[e.hH], e)
		}
	}
	if len(deleted) > 0 {
		var added []*statusEntry
		for _, e := range entries {
			if e.xy[0] == 'A' && len(deleted[e.hI]) > 0 {
				added = append(added, e)
			}
		}
		sort.Slice(added, func(i, j int) bool { return added[i].path < added[j].path })
		for _, e := range added {
			cands := deleted[e.hI]
			if len(cands) == 0 {
				continue
			}
			sort.Slice(cands, func(i, j int) bool { return cands[i].path < cands[j].path })
			from := cands[0]
			deleted[e.hI] = cands[1:]
			e.kind, e.orig, e.xy[0] = '2', from.path, 'R'
			e.mH, e.hH = from.mH, from.hH
			delete(entries, from.path)
		}
	}

	specs := rp.fromCwdAll(opts.paths)
	for p, ce := range conflicts {
		ce.xy = unmergedXY(ce.stages)
		ce.mW = worktreeMode(rp.root, p, filemode.Empty)
		entries[p] = ce
	}
	for p, e := range entries {
		if e.kind != 'u' && e.xy == [2]byte{'.', '.'} {
			continue
		}
		if !matchPaths(specs, p) {
			continue
		}
		tracked = append(tracked, e)
	}
	sort.Slice(tracked, func(i, j int) bool { return tracked[i].path < tracked[j].path })

	seen := map[string]bool{}
	for _, p := range untrackedFiles {
		if opts.untracked == "normal" {
			p = collapseUntracked(p, trackedDirs)
		}
		if !seen[p] && matchPaths(specs, p) {
			seen[p] = true
			untracked = append(untracked, p)
		}
	}
	sort.Strings(untracked)
	return tracked, untracked, nil
}

// unmergedXY is the two-letter code git gives a path by the stages present:
// 1 = common ancestor, 2 = ours, 3 = theirs.
func unmergedXY(s [3]*index.Entry) [2]byte {
	b, o, t := s[0] != nil, s[1] != nil, s[2] != nil
	switch {
	case b && o && t:
		return [2]byte{'U', 'U'}
	case !b && o && t:
		return [2]byte{'A', 'A'}
	case b && !o && !t:
		return [2]byte{'D', 'D'}
	case b && o && !t:
		return [2]byte{'U', 'D'}
	case b && !o && t:
		return [2]byte{'D', 'U'}
	case !b && o && !t:
		return [2]byte{'A', 'U'}
	default:
		return [2]byte{'U', 'A'}
	}
}

// collapseUntracked returns the shallowest untracked directory holding p
// ("dir/"), or p when every parent directory has tracked files.
func collapseUntracked(p string, trackedDirs map[string]bool) string {
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && !trackedDirs[p[:i]] {
			return p[:i+1]
		}
	}
	return p
}

// matchPaths reports whether root-relative p is under one of the
// root-relative pathspecs (no pathspecs match everything).
func matchPaths(specs []string, p string) bool {
	if len(specs) == 0 {
		return true
	}
	for _, s := range specs {
		if s == "" || p == s || strings.HasPrefix(p, s+"/") || strings.TrimSuffix(p, "/") == s {
			return true
		}
	}
	return false
}

// submoduleDirty reports whether the submodule checked out at dir has
// modified tracked content or untracked files.
func submoduleDirty(dir string) (modified, untracked bool) {
	r, err := gogit.PlainOpen(dir)
	if err != nil {
		return false, false
	}
	wt, err := r.Worktree()
	if err != nil {
		return false, false
	}
	st, err := wt.Status()
	if err != nil {
		return false, false
	}
	for _, f := range st {
		switch {
		case f.Worktree == gogit.Untracked:
			untracked = true
		case f.Worktree != gogit.Unmodified || f.Staging != gogit.Unmodified:
			modified = true
		}
	}
	return modified, untracked
}

func flagChar(on bool, c byte) string {
	if on {
		return string(c)
	}
	return "."
}

// worktreeMode is the git mode of the file at root/p, or def when it cannot
// be read (a missing file is mode 0).
func worktreeMode(root, p string, def filemode.FileMode) filemode.FileMode {
	fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(p)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return filemode.Empty
		}
		return def
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return filemode.Symlink
	case fi.IsDir():
		return filemode.Submodule
	case runtime.GOOS == "windows": // no exec bit: keep the index's
		if def == filemode.Executable {
			return def
		}
		return filemode.Regular
	case fi.Mode()&0o111 != 0:
		return filemode.Executable
	default:
		return filemode.Regular
	}
}

// modeType folds executable into regular: a type change is between file,
// symlink and submodule.
func modeType(m filemode.FileMode) filemode.FileMode {
	if m == filemode.Executable || m == filemode.Deprecated {
		return filemode.Regular
	}
	return m
}

// pathDir is the parent of a slash path, "" at the top.
func pathDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ""
	}
	return p[:i]
}

// aheadBehind counts the commits reachable from a but not b (ahead) and from
// b but not a (behind), walking both histories newest first until every
// remaining commit is reachable from both (git's assumption about commit
// dates, too).
func aheadBehind(r *gogit.Repository, a, b plumbing.Hash) (ahead, behind int, err error) {
	const fromA, fromB = 1, 2
	flags := map[plumbing.Hash]uint8{}
	q := &commitQueue{}
	push := func(h plumbing.Hash, f uint8) error {
		old := flags[h]
		if old|f == old {
			return nil
		}
		flags[h] = old | f
		c, err := r.CommitObject(h)
		if err != nil {
			return err
		}
		heap.Push(q, c)
		return nil
	}
	if err := push(a, fromA); err != nil {
		return 0, 0, err
	}
	if err := push(b, fromB); err != nil {
		return 0, 0, err
	}
	for q.Len() > 0 {
		stale := true
		for _, c := range *q {
			if flags[c.Hash] != fromA|fromB {
				stale = false
				break
			}
		}
		if stale {
			break
		}
		c := heap.Pop(q).(*object.Commit)
		f := flags[c.Hash]
		for _, p := range c.ParentHashes {
			if err := push(p, f); err != nil {
				return 0, 0, err
			}
		}
	}
	for _, f := range flags {
		switch f {
		case fromA:
			ahead++
		case fromB:
			behind++
		}
	}
	return ahead, behind, nil
}

// commitQueue is a max-heap of commits by committer date.
type commitQueue []*object.Commit

func (q commitQueue) Len() int { return len(q) }
func (q commitQueue) Less(i, j int) bool {
	return q[i].Committer.When.After(q[j].Committer.When)
}
func (q commitQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *commitQueue) Push(x any)   { *q = append(*q, x.(*object.Commit)) }
func (q *commitQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	*q = old[:len(old)-1]
	return c
}

// quoteC quotes a path the way git does with core.quotePath on: paths with
// control characters (DEL included), '"', '\\' or bytes >= 0x80 are
// C-quoted.
func quoteC(p string) string {
	need := false
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			need = true
			break
		}
	}
	if !need {
		return p
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\v':
			b.WriteString(`\v`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			if c < 0x20 || c >= 0x7f {
				fmt.Fprintf(&b, `\%03o`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
