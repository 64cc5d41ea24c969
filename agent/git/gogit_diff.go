package git

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	fdiff "github.com/go-git/go-git/v5/plumbing/format/diff"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/utils/diff"
	"github.com/sergi/go-diff/diffmatchpatch"
)

// diffOptions are the `git diff` arguments the go-git path honours.
type diffOptions struct {
	cached     bool
	nameOnly   bool
	nameStatus bool
	revs       []string
	paths      []string
}

func parseDiffArgs(cwd string, args []string) (diffOptions, error) {
	var o diffOptions
	args, after := cutDashDash(args)
	for _, a := range args {
		switch {
		case a == "--cached" || a == "--staged":
			o.cached = true
		case a == "--name-only":
			o.nameOnly = true
		case a == "--name-status":
			o.nameStatus = true
		case a == "--no-color" || a == "--no-ext-diff" || a == "-p" || a == "--patch":
		case strings.HasPrefix(a, "-"):
			return o, unsupportedArg("diff", a)
		case len(o.paths) == 0 && len(o.revs) < 2 && !looksLikePath(cwd, a):
			if from, to, ok := strings.Cut(a, ".."); ok && !strings.Contains(to, ".") {
				o.revs = append(o.revs, orHEAD(from), orHEAD(to))
			} else {
				o.revs = append(o.revs, a)
			}
		default:
			o.paths = append(o.paths, a)
		}
	}
	o.paths = append(o.paths, after...)
	return o, nil
}

func orHEAD(rev string) string {
	if rev == "" {
		return "HEAD"
	}
	return rev
}

// looksLikePath guesses, like git without "--", whether a is a path: it is
// when it names an existing file in cwd.
func looksLikePath(cwd, a string) bool {
	_, err := os.Lstat(filepath.Join(cwd, filepath.FromSlash(a)))
	return err == nil
}

// blobSide is one side of a file pair.
type blobSide struct {
	path    string
	mode    filemode.FileMode
	hash    plumbing.Hash
	content []byte
}

func (b *blobSide) Hash() plumbing.Hash     { return b.hash }
func (b *blobSide) Mode() filemode.FileMode { return b.mode }
func (b *blobSide) Path() string            { return b.path }

// filePair implements fdiff.FilePatch over two in-memory sides.
type filePair struct {
	from, to *blobSide
	chunks   []fdiff.Chunk
	binary   bool
}

func (p *filePair) IsBinary() bool { return p.binary }
func (p *filePair) Files() (fdiff.File, fdiff.File) {
	var from, to fdiff.File
	if p.from != nil {
		from = p.from
	}
	if p.to != nil {
		to = p.to
	}
	return from, to
}
func (p *filePair) Chunks() []fdiff.Chunk { return p.chunks }

type chunk struct {
	content string
	op      fdiff.Operation
}

func (c chunk) Content() string                 { return c.content }
func (c chunk) Type() fdiff.Operation           { return c.op }
func (p *filePair) compute()                    { p.binary, p.chunks = diffChunks(p.from, p.to) }
func (pp patch) FilePatches() []fdiff.FilePatch { return pp }
func (pp patch) Message() string                { return "" }

type patch []fdiff.FilePatch

func diffChunks(from, to *blobSide) (bool, []fdiff.Chunk) {
	var a, b []byte
	if from != nil {
		a = from.content
	}
	if to != nil {
		b = to.content
	}
	if isBinary(a) || isBinary(b) {
		return true, nil
	}
	var out []fdiff.Chunk
	for _, d := range diff.Do(string(a), string(b)) {
		op := fdiff.Equal
		switch d.Type {
		case diffmatchpatch.DiffInsert:
			op = fdiff.Add
		case diffmatchpatch.DiffDelete:
			op = fdiff.Delete
		}
		out = append(out, chunk{d.Text, op})
	}
	return false, out
}

// isBinary is git's heuristic: a NUL in the first 8000 bytes.
func isBinary(b []byte) bool {
	return bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0
}

// diffOp answers GIT_OP_DIFF: worktree against the index, --cached (index
// against HEAD), or two commits, as a unified patch.
func diffOp(ctx context.Context, rp *repo, args []string) (*result, error) {
	opts, err := parseDiffArgs(filepath.Join(rp.root, filepath.FromSlash(rp.prefix)), args)
	if err != nil {
		return nil, err
	}
	res := new(result)
	var pairs []*filePair
	switch {
	case len(opts.revs) == 2:
		pp, r, err := commitPairs(ctx, rp, opts.revs[0], opts.revs[1])
		if err != nil || r != nil {
			return r, err
		}
		pairs = pp
	case len(opts.revs) == 1:
		return nil, unsupportedArg("diff", opts.revs[0])
	default:
		pp, err := localPairs(rp, opts.cached)
		if err != nil {
			return nil, err
		}
		pairs = pp
	}
	specs := rp.fromCwdAll(opts.paths)
	var fps patch
	for _, p := range pairs {
		path := p.to
		if path == nil {
			path = p.from
		}
		if !matchPaths(specs, path.path) {
			continue
		}
		switch {
		case opts.nameOnly:
			fmt.Fprintln(&res.stdout, rp.display(path.path))
		case opts.nameStatus:
			code := "M"
			switch {
			case p.from == nil:
				code = "A"
			case p.to == nil:
				code = "D"
			case p.from.path != p.to.path:
				code = "R100"
			}
			if code == "R100" {
				fmt.Fprintf(&res.stdout, "%s\t%s\t%s\n", code, rp.display(p.from.path), rp.display(p.to.path))
			} else {
				fmt.Fprintf(&res.stdout, "%s\t%s\n", code, rp.display(path.path))
			}
		default:
			p.compute()
			fps = append(fps, p)
		}
	}
	if len(fps) > 0 {
		if err := fdiff.NewUnifiedEncoder(&res.stdout, fdiff.DefaultContextLines).Encode(fps); err != nil {
			return nil, fmt.Errorf("encode patch: %w", err)
		}
	}
	return res, nil
}

// localPairs diffs the worktree against the index, or with cached the index
// against HEAD.
func localPairs(rp *repo, cached bool) ([]*filePair, error) {
	head, err := headCommitHash(rp)
	if err != nil {
		return nil, err
	}
	tracked, _, err := collectStatus(rp, head, statusOptions{untracked: "no"})
	if err != nil {
		return nil, err
	}
	var pairs []*filePair
	for _, e := range tracked {
		if e.kind == 'u' || e.mI == filemode.Submodule || e.mH == filemode.Submodule {
			continue
		}
		p := &filePair{}
		if cached {
			if e.xy[0] == '.' {
				continue
			}
			if !e.hH.IsZero() {
				from := e.path
				if e.kind == '2' {
					from = e.orig
				}
				if p.from, err = readBlob(rp, from, e.mH, e.hH); err != nil {
					return nil, err
				}
			}
			if !e.hI.IsZero() && e.xy[0] != 'D' {
				if p.to, err = readBlob(rp, e.path, e.mI, e.hI); err != nil {
					return nil, err
				}
			}
		} else {
			if e.xy[1] == '.' {
				continue
			}
			if p.from, err = readBlob(rp, e.path, e.mI, e.hI); err != nil {
				return nil, err
			}
			if e.xy[1] != 'D' {
				b, err := readWorktree(rp.root, e.path, e.mW)
				if err != nil {
					return nil, err
				}
				b.mode = e.mW
				p.to = b
			}
		}
		pairs = append(pairs, p)
	}
	return pairs, nil
}

func headCommitHash(rp *repo) (plumbing.Hash, error) {
	ref, err := rp.r.Head()
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("resolve HEAD: %w", err)
	}
	return ref.Hash(), nil
}

func readBlob(rp *repo, path string, mode filemode.FileMode, h plumbing.Hash) (*blobSide, error) {
	blob, err := rp.r.BlobObject(h)
	if err != nil {
		return nil, fmt.Errorf("read blob %s (%s): %w", h, path, err)
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, fmt.Errorf("read blob %s (%s): %w", h, path, err)
	}
	defer rd.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rd); err != nil {
		return nil, fmt.Errorf("read blob %s (%s): %w", h, path, err)
	}
	return &blobSide{path: path, mode: mode, hash: h, content: buf.Bytes()}, nil
}

func readWorktree(root, path string, mode filemode.FileMode) (*blobSide, error) {
	full := filepath.Join(root, filepath.FromSlash(path))
	var content []byte
	var err error
	if mode == filemode.Symlink {
		var target string
		target, err = os.Readlink(full)
		content = []byte(filepath.ToSlash(target))
	} else {
		content, err = os.ReadFile(full)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", full, err)
	}
	return &blobSide{path: path, mode: mode, hash: plumbing.ComputeHash(plumbing.BlobObject, content), content: content}, nil
}

// commitPairs diffs the trees of two revisions, renames detected.
func commitPairs(ctx context.Context, rp *repo, a, b string) ([]*filePair, *result, error) {
	var trees [2]*object.Tree
	for i, rev := range []string{a, b} {
		h, err := rp.r.ResolveRevision(plumbing.Revision(rev))
		if err != nil {
			return nil, new(result).fatal("ambiguous argument '%s': unknown revision or path not in the working tree.", rev), nil
		}
		c, err := rp.r.CommitObject(*h)
		if err != nil {
			return nil, nil, fmt.Errorf("read commit %s: %w", rev, err)
		}
		if trees[i], err = c.Tree(); err != nil {
			return nil, nil, fmt.Errorf("read tree of %s: %w", rev, err)
		}
	}
	changes, err := object.DiffTreeWithOptions(ctx, trees[0], trees[1], &object.DiffTreeOptions{DetectRenames: true, RenameScore: 50, RenameLimit: 1000})
	if err != nil {
		return nil, nil, fmt.Errorf("diff trees: %w", err)
	}
	var pairs []*filePair
	for _, ch := range changes {
		p := &filePair{}
		if ch.From.Name != "" {
			if p.from, err = readBlob(rp, ch.From.Name, ch.From.TreeEntry.Mode, ch.From.TreeEntry.Hash); err != nil {
				return nil, nil, err
			}
		}
		if ch.To.Name != "" {
			if p.to, err = readBlob(rp, ch.To.Name, ch.To.TreeEntry.Mode, ch.To.TreeEntry.Hash); err != nil {
				return nil, nil, err
			}
		}
		pairs = append(pairs, p)
	}
	return pairs, nil, nil
}
