package gitsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
)

// Change is one side (index or worktree) of a file's status; "" is null on
// the wire.
type Change string

// The changes of control.md §4.3.
const (
	Unchanged   Change = ""
	Added       Change = "added"
	Modified    Change = "modified"
	Deleted     Change = "deleted"
	Renamed     Change = "renamed"
	Copied      Change = "copied"
	TypeChanged Change = "typechange"
	Conflicted  Change = "conflicted"
	Untracked   Change = "untracked"
	Ignored     Change = "ignored"
)

// MarshalJSON writes Unchanged as null.
func (c Change) MarshalJSON() ([]byte, error) {
	if c == Unchanged {
		return []byte("null"), nil
	}
	return json.Marshal(string(c))
}

// UnmarshalJSON reads null as Unchanged.
func (c *Change) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*c = Unchanged
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*c = Change(s)
	return nil
}

// Status is a repository's working state.
type Status struct {
	IsRepo   bool         `json:"isRepo"`
	Head     *string      `json:"head"` // nil when detached or not a repository
	Detached bool         `json:"detached"`
	Upstream *string      `json:"upstream"`
	Ahead    int          `json:"ahead"`
	Behind   int          `json:"behind"`
	Files    []FileStatus `json:"files"`
}

// FileStatus is one changed, untracked, ignored or conflicted path.
type FileStatus struct {
	Path         string `json:"path"`
	OldPath      string `json:"oldPath,omitempty"` // a rename's or copy's source
	Index        Change `json:"index"`
	Worktree     Change `json:"worktree"`
	IsConflicted bool   `json:"isConflicted"`
}

// Status reports the repository at path (relative to the workspace root).
func (s *Service) Status(ctx context.Context, path string) (*Status, error) {
	dir := s.repoWorkdir(path)
	out, _, code, err := s.git(ctx, dir, "rev-parse", "--is-inside-work-tree")
	if err != nil {
		return nil, err
	}
	if code != 0 || strings.TrimSpace(string(out)) != "true" {
		return &Status{Files: []FileStatus{}}, nil
	}
	out, stderr, code, err := s.git(ctx, dir, statusArgs...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, invalid("git status failed: %s", firstLine(stderr, code))
	}
	st := ParseStatus(out)
	return &st, nil
}

// statusArgs is the git status that ParseStatus reads.
var statusArgs = []string{"status", "--porcelain=v2", "--branch", "-z"}

// ParseStatus parses `git status --porcelain=v2 --branch -z` output.
func ParseStatus(out []byte) Status {
	st := Status{IsRepo: true, Files: []FileStatus{}}
	recs := strings.Split(string(out), "\x00")
	for i := 0; i < len(recs); i++ {
		rec := recs[i]
		if rec == "" {
			continue
		}
		switch rec[0] {
		case '#':
			key, val, _ := strings.Cut(strings.TrimPrefix(rec, "# "), " ")
			switch key {
			case "branch.head":
				if val == "(detached)" {
					st.Detached = true
				} else {
					st.Head = &val
				}
			case "branch.upstream":
				st.Upstream = &val
			case "branch.ab":
				a, b, _ := strings.Cut(val, " ")
				st.Ahead, _ = strconv.Atoi(strings.TrimPrefix(a, "+"))
				st.Behind, _ = strconv.Atoi(strings.TrimPrefix(b, "-"))
			}
		case '1':
			if f := fields(rec, 9); f != nil {
				st.Files = append(st.Files, tracked(f[1], f[8], ""))
			}
		case '2':
			if f := fields(rec, 10); f != nil {
				old := ""
				if i+1 < len(recs) {
					i++
					old = recs[i]
				}
				st.Files = append(st.Files, tracked(f[1], f[9], old))
			}
		case 'u':
			if f := fields(rec, 11); f != nil {
				st.Files = append(st.Files, FileStatus{Path: f[10], Index: Conflicted, Worktree: Conflicted, IsConflicted: true})
			}
		case '?':
			st.Files = append(st.Files, FileStatus{Path: rec[min(2, len(rec)):], Worktree: Untracked})
		case '!':
			st.Files = append(st.Files, FileStatus{Path: rec[min(2, len(rec)):], Worktree: Ignored})
		}
	}
	return st
}

// fields splits a record into n space-separated fields, the last being the
// rest (a path may hold spaces); nil when the record is short.
func fields(rec string, n int) []string {
	f := strings.SplitN(rec, " ", n)
	if len(f) < n || len(f[1]) != 2 {
		return nil
	}
	return f
}

func tracked(xy, path, old string) FileStatus {
	fs := FileStatus{Path: path, OldPath: old, Index: letter(xy[0]), Worktree: letter(xy[1])}
	fs.IsConflicted = xy[0] == 'U' || xy[1] == 'U'
	return fs
}

// letter maps a porcelain v2 status letter to a Change.
func letter(c byte) Change {
	switch c {
	case 'A':
		return Added
	case 'M':
		return Modified
	case 'D':
		return Deleted
	case 'R':
		return Renamed
	case 'C':
		return Copied
	case 'T':
		return TypeChanged
	case 'U':
		return Conflicted
	}
	return Unchanged
}

// firstLine is a short reason for a failed command.
func firstLine(stderr []byte, code int) string {
	line, _, _ := bytes.Cut(bytes.TrimSpace(stderr), []byte("\n"))
	if len(line) == 0 {
		return "exit " + strconv.Itoa(code)
	}
	return string(line)
}
