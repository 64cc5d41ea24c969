package gitsvc

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// The field and record separators of the log format (US, RS).
const (
	unitSep   = "\x1f"
	recordSep = "\x1e"
)

// logFormat prints every field of a commit, US-separated, RS-terminated.
var logFormat = strings.Join([]string{"%H", "%h", "%P", "%an", "%ae", "%at", "%cn", "%ce", "%ct", "%s", "%b"}, unitSep) + recordSep

// LogRequest pages through history.
type LogRequest struct {
	Path     string   `json:"path"`
	Ref      string   `json:"ref,omitempty"`      // default HEAD
	MaxCount int      `json:"maxCount,omitempty"` // default 50, at most 1000
	Skip     int      `json:"skip,omitempty"`
	Pathspec []string `json:"pathspec,omitempty"`
}

// Log is one page of commits.
type Log struct {
	Commits []Commit `json:"commits"`
	HasMore bool     `json:"hasMore"`
}

// Commit is one commit's metadata.
type Commit struct {
	Hash           string    `json:"hash"`
	ShortHash      string    `json:"shortHash"`
	Parents        []string  `json:"parents"`
	AuthorName     string    `json:"authorName"`
	AuthorEmail    string    `json:"authorEmail"`
	AuthorDate     time.Time `json:"authorDate"`
	CommitterName  string    `json:"committerName"`
	CommitterEmail string    `json:"committerEmail"`
	CommitterDate  time.Time `json:"committerDate"`
	Subject        string    `json:"subject"`
	Body           string    `json:"body"`
}

// Log returns up to MaxCount commits from Ref after skipping Skip, and
// whether more follow. A ref git cannot read (an empty repository, a typo)
// gives an empty page.
func (s *Service) Log(ctx context.Context, req LogRequest) (*Log, error) {
	ref, err := refOrHEAD(req.Ref)
	if err != nil {
		return nil, err
	}
	n := req.MaxCount
	if n <= 0 {
		n = DefaultLogCount
	}
	n = min(n, MaxLogCount)
	out, _, code, err := s.git(ctx, s.repoWorkdir(req.Path), logArgs(n+1, max(req.Skip, 0), ref, req.Pathspec)...)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return &Log{Commits: []Commit{}}, nil
	}
	commits, more := ParseLog(out, n)
	return &Log{Commits: commits, HasMore: more}, nil
}

// logArgs is the git log that prints up to n commits from ref, after
// skipping skip, in logFormat.
func logArgs(n, skip int, ref string, pathspec []string) []string {
	args := []string{"log", "--format=" + logFormat, "-n" + strconv.Itoa(n), "--skip=" + strconv.Itoa(skip), ref}
	if len(pathspec) > 0 {
		args = append(append(args, "--"), pathspec...)
	}
	return args
}

// refOrHEAD is ref, HEAD when empty; a ref that git would read as an option
// is invalid.
func refOrHEAD(ref string) (string, error) {
	if ref == "" {
		ref = "HEAD"
	}
	if strings.HasPrefix(ref, "-") {
		return "", invalid("invalid ref: %s", ref)
	}
	return ref, nil
}

// ParseLog parses the output of `git log --format=<logFormat>`, keeping at
// most maxCount commits; hasMore says there were more records.
func ParseLog(out []byte, maxCount int) (commits []Commit, hasMore bool) {
	commits = []Commit{}
	for _, rec := range strings.Split(string(out), recordSep) {
		rec = strings.TrimPrefix(rec, "\n")
		if strings.TrimSpace(rec) == "" {
			continue
		}
		f := strings.Split(rec, unitSep)
		if len(f) < 11 {
			continue
		}
		if len(commits) == maxCount {
			hasMore = true
			break
		}
		c := Commit{
			Hash: f[0], ShortHash: f[1], Parents: []string{},
			AuthorName: f[3], AuthorEmail: f[4], AuthorDate: unixTime(f[5]),
			CommitterName: f[6], CommitterEmail: f[7], CommitterDate: unixTime(f[8]),
			Subject: f[9], Body: strings.TrimRight(strings.Join(f[10:], unitSep), "\n"),
		}
		if f[2] != "" {
			c.Parents = strings.Split(f[2], " ")
		}
		commits = append(commits, c)
	}
	return commits, hasMore
}

func unixTime(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}
