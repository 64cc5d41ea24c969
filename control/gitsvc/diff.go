package gitsvc

import (
	"context"
	"path"
	"strconv"
	"strings"
)

// DiffRequest selects what to compare. The range is, by precedence:
// FromRef+ToRef, FromRef against the worktree, the index against HEAD
// (Staged), or the worktree against the index.
type DiffRequest struct {
	Path            string   `json:"path"` // the repository, relative to the workspace root
	FromRef         string   `json:"fromRef,omitempty"`
	ToRef           string   `json:"toRef,omitempty"`
	Staged          bool     `json:"staged,omitempty"`
	Pathspec        []string `json:"pathspec,omitempty"`
	ContextLines    int      `json:"contextLines,omitempty"`    // default 3
	MaxBytesPerFile int      `json:"maxBytesPerFile,omitempty"` // default Options.MaxBytesPerFile
}

// Diff is a structured diff, one entry per file.
type Diff struct {
	Files     []FileDiff `json:"files"`
	Truncated bool       `json:"truncated"` // the total cap cut some files' hunks
}

// FileDiff is one file's changes.
type FileDiff struct {
	Path      string `json:"path"`
	OldPath   string `json:"oldPath,omitempty"`
	Status    string `json:"status"` // added, deleted, renamed, modified
	Additions int    `json:"additions"`
	Deletions int    `json:"deletions"`
	IsBinary  bool   `json:"isBinary"`
	IsImage   bool   `json:"isImage"`
	Truncated bool   `json:"truncated"`
	Hunks     []Hunk `json:"hunks"`
}

// Hunk is one "@@ -a,b +c,d @@" block.
type Hunk struct {
	OldStart int        `json:"oldStart"`
	OldLines int        `json:"oldLines"`
	NewStart int        `json:"newStart"`
	NewLines int        `json:"newLines"`
	Header   string     `json:"header"`
	Lines    []DiffLine `json:"lines"`
}

// DiffLine is one line of a hunk; OldNo/NewNo are set on the sides it
// exists on.
type DiffLine struct {
	Type    string `json:"type"` // add, del, context
	Content string `json:"content"`
	OldNo   *int   `json:"oldNo,omitempty"`
	NewNo   *int   `json:"newNo,omitempty"`
}

// Numstat is one record of `git diff --numstat -z`.
type Numstat struct {
	Path      string `json:"path"`
	OldPath   string `json:"oldPath,omitempty"` // set for a rename
	Additions int    `json:"additions"`
	Deletions int    `json:"deletions"`
	Binary    bool   `json:"binary"`
}

// Diff returns the structured diff of req.
func (s *Service) Diff(ctx context.Context, req DiffRequest) (*Diff, error) {
	dir := s.repoWorkdir(req.Path)
	var rng []string
	switch {
	case req.FromRef != "" && req.ToRef != "":
		rng = []string{req.FromRef, req.ToRef}
	case req.FromRef != "":
		rng = []string{req.FromRef}
	case req.Staged:
		rng = []string{"--cached"}
	}
	for _, r := range rng {
		if strings.HasPrefix(r, "-") && r != "--cached" {
			return nil, invalid("invalid ref: %s", r)
		}
	}
	ctxLines := req.ContextLines
	if ctxLines <= 0 {
		ctxLines = DefaultContextLines
	}
	maxFile := req.MaxBytesPerFile
	if maxFile <= 0 {
		maxFile = s.opts.MaxBytesPerFile
	}

	out, stderr, code, err := s.git(ctx, dir, numstatArgs(rng, req.Pathspec)...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, invalid("git diff failed: %s", firstLine(stderr, code))
	}
	d := &Diff{Files: []FileDiff{}}
	total := 0
	for _, ns := range ParseNumstat(out) {
		fd := FileDiff{
			Path: ns.Path, OldPath: ns.OldPath, Status: "modified",
			Additions: ns.Additions, Deletions: ns.Deletions,
			IsBinary: ns.Binary, IsImage: isImage(ns.Path), Hunks: []Hunk{},
		}
		if ns.OldPath != "" {
			fd.Status = "renamed"
		}
		if ns.Binary {
			fd.Additions, fd.Deletions = 0, 0
			d.Files = append(d.Files, fd)
			continue
		}
		if total >= s.opts.MaxTotalBytes {
			fd.Truncated, d.Truncated = true, true
			d.Files = append(d.Files, fd)
			continue
		}
		paths := []string{ns.Path}
		if ns.OldPath != "" {
			paths = []string{ns.OldPath, ns.Path} // both, so git sees the rename
		}
		patch, _, code, err := s.git(ctx, dir, patchArgs(ctxLines, rng, paths)...)
		if err != nil {
			return nil, err
		}
		if code != 0 {
			d.Files = append(d.Files, fd)
			continue
		}
		switch {
		case len(patch) > maxFile:
			fd.Truncated = true
		case total+len(patch) > s.opts.MaxTotalBytes:
			fd.Truncated, d.Truncated = true, true
		default:
			total += len(patch)
			st, hunks := ParsePatch(string(patch))
			if st != "" {
				fd.Status = st
			}
			fd.Hunks = hunks
		}
		d.Files = append(d.Files, fd)
	}
	return d, nil
}

// numstatArgs is the git diff that lists the files of rng with their
// counts, NUL-separated with unquoted paths.
func numstatArgs(rng, pathspec []string) []string {
	args := append([]string{"-c", "core.quotePath=false", "diff", "--no-color", "-z", "--numstat"}, rng...)
	if len(pathspec) > 0 {
		args = append(append(args, "--"), pathspec...)
	}
	return args
}

// patchArgs is the git diff that prints the patch of rng for paths with
// ctxLines lines of context.
func patchArgs(ctxLines int, rng, paths []string) []string {
	args := append([]string{"-c", "core.quotePath=false", "diff", "--no-color", "-U" + strconv.Itoa(ctxLines)}, rng...)
	return append(append(args, "--"), paths...)
}

// ParseNumstat parses `git diff --numstat -z`: "add\tdel\tpath\0" records,
// or "add\tdel\t\0old\0new\0" for a rename; "-\t-" marks a binary file.
func ParseNumstat(out []byte) []Numstat {
	var res []Numstat
	toks := strings.Split(string(out), "\x00")
	for i := 0; i < len(toks); i++ {
		f := strings.SplitN(toks[i], "\t", 3)
		if len(f) < 3 {
			continue
		}
		ns := Numstat{Path: f[2]}
		if f[0] == "-" && f[1] == "-" {
			ns.Binary = true
		} else {
			ns.Additions, _ = strconv.Atoi(f[0])
			ns.Deletions, _ = strconv.Atoi(f[1])
		}
		if ns.Path == "" {
			if i+2 >= len(toks) {
				break
			}
			ns.OldPath, ns.Path = toks[i+1], toks[i+2]
			i += 2
		}
		res = append(res, ns)
	}
	return res
}

// ParsePatch parses one file's unified diff: its status from the extended
// header ("" when only the hunks tell: modified) and its hunks.
func ParsePatch(patch string) (status string, hunks []Hunk) {
	hunks = []Hunk{}
	var cur *Hunk
	oldNo, newNo := 0, 0
	lines := strings.Split(strings.TrimSuffix(patch, "\n"), "\n")
	for _, line := range lines {
		if cur == nil || strings.HasPrefix(line, "@@ ") || strings.HasPrefix(line, "diff --git ") {
			switch {
			case strings.HasPrefix(line, "@@ "):
				h, ok := parseHunkHeader(line)
				if !ok {
					continue
				}
				hunks = append(hunks, h)
				cur = &hunks[len(hunks)-1]
				oldNo, newNo = h.OldStart, h.NewStart
			case strings.HasPrefix(line, "new file mode"):
				status = "added"
			case strings.HasPrefix(line, "deleted file mode"):
				status = "deleted"
			case strings.HasPrefix(line, "rename from") || strings.HasPrefix(line, "rename to"):
				status = "renamed"
			case strings.HasPrefix(line, "diff --git "):
				cur = nil
			}
			continue
		}
		if line == "" {
			line = " " // a blank context line some tools strip
		}
		content := line[1:]
		switch line[0] {
		case '+':
			n := newNo
			cur.Lines = append(cur.Lines, DiffLine{Type: "add", Content: content, NewNo: &n})
			newNo++
		case '-':
			o := oldNo
			cur.Lines = append(cur.Lines, DiffLine{Type: "del", Content: content, OldNo: &o})
			oldNo++
		case ' ':
			o, n := oldNo, newNo
			cur.Lines = append(cur.Lines, DiffLine{Type: "context", Content: content, OldNo: &o, NewNo: &n})
			oldNo++
			newNo++
		case '\\': // "\ No newline at end of file"
		}
	}
	return status, hunks
}

// parseHunkHeader parses "@@ -a[,b] +c[,d] @@ header"; a missing count is 1.
func parseHunkHeader(line string) (Hunk, bool) {
	rest := strings.TrimPrefix(line, "@@ ")
	ranges, header, ok := strings.Cut(rest, " @@")
	if !ok {
		return Hunk{}, false
	}
	oldR, newR, ok := strings.Cut(ranges, " ")
	if !ok || !strings.HasPrefix(oldR, "-") || !strings.HasPrefix(newR, "+") {
		return Hunk{}, false
	}
	h := Hunk{Header: strings.TrimPrefix(header, " "), Lines: []DiffLine{}}
	var ok1, ok2 bool
	h.OldStart, h.OldLines, ok1 = parseRange(oldR[1:])
	h.NewStart, h.NewLines, ok2 = parseRange(newR[1:])
	return h, ok1 && ok2
}

func parseRange(s string) (start, count int, ok bool) {
	a, b, hasCount := strings.Cut(s, ",")
	start, err := strconv.Atoi(a)
	if err != nil {
		return 0, 0, false
	}
	count = 1
	if hasCount {
		if count, err = strconv.Atoi(b); err != nil {
			return 0, 0, false
		}
	}
	return start, count, true
}

var imageExts = map[string]bool{
	".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".webp": true,
	".bmp": true, ".ico": true, ".svg": true, ".tif": true, ".tiff": true,
}

func isImage(p string) bool { return imageExts[strings.ToLower(path.Ext(p))] }
