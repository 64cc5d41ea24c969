package gitsvc

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/gittest"
)

// newService runs the service against the sandbox with real git.
func newService(sb *gittest.Sandbox, opts Options) *Service {
	if opts.WorkspaceRoot == "" {
		opts.WorkspaceRoot = sb.Dir
	}
	return New(execRunner{env: gittest.Env(sb.Home)}, opts)
}

func TestStatusEndToEnd(t *testing.T) {
	sb := gittest.New(t, "")
	repo := gittest.AheadBehind(sb)
	svc := newService(sb, Options{})
	st, err := svc.Status(context.Background(), "/"+repo+"/")
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsRepo || st.Head == nil || *st.Head != "main" || st.Upstream == nil || *st.Upstream != "origin/main" || st.Ahead != 1 || st.Behind != 1 {
		t.Fatalf("status = %+v", st)
	}
	if len(st.Files) != 3 {
		t.Fatalf("files = %+v", st.Files)
	}

	// A directory outside any repository.
	sb.Write("plain/x.txt", "x")
	st, err = svc.Status(context.Background(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	if st.IsRepo || st.Head != nil || len(st.Files) != 0 || st.Files == nil {
		t.Fatalf("non-repo status = %+v", st)
	}
}

func TestDiffEndToEnd(t *testing.T) {
	sb := gittest.New(t, "")
	repo := gittest.History(sb)
	svc := newService(sb, Options{})
	ctx := context.Background()

	wt, err := svc.Diff(ctx, DiffRequest{Path: repo})
	if err != nil {
		t.Fatal(err)
	}
	if len(wt.Files) != 1 || wt.Files[0].Path != "code.go" || wt.Files[0].Status != "modified" || len(wt.Files[0].Hunks) != 1 {
		t.Fatalf("worktree diff = %+v", wt)
	}

	staged, err := svc.Diff(ctx, DiffRequest{Path: repo, Staged: true})
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]FileDiff{}
	for _, f := range staged.Files {
		byPath[f.Path] = f
	}
	if f := byPath["blob.bin"]; !f.IsBinary || len(f.Hunks) != 0 {
		t.Errorf("binary = %+v", f)
	}
	if f := byPath["logo.svg"]; !f.IsImage || f.Status != "added" || f.Additions != 1 {
		t.Errorf("image = %+v", f)
	}
	if f := byPath["renamed feature.txt"]; f.Status != "renamed" || f.OldPath != "feature.txt" || f.Additions != 1 || len(f.Hunks) != 1 {
		t.Errorf("rename = %+v", f)
	}

	// A range between commits, limited by pathspec.
	rng, err := svc.Diff(ctx, DiffRequest{Path: repo, FromRef: "HEAD~2", ToRef: "HEAD", Pathspec: []string{"feature.txt"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rng.Files) != 1 || rng.Files[0].Status != "added" {
		t.Fatalf("range diff = %+v", rng)
	}

	// Per-file cap: the patch is larger than 10 bytes.
	capped, err := svc.Diff(ctx, DiffRequest{Path: repo, MaxBytesPerFile: 10})
	if err != nil {
		t.Fatal(err)
	}
	if f := capped.Files[0]; !f.Truncated || len(f.Hunks) != 0 || f.Additions != 1 {
		t.Fatalf("capped = %+v", f)
	}
	// Total cap: the first file fits, the rest are listed without hunks.
	total, err := New(execRunner{env: gittest.Env(sb.Home)}, Options{WorkspaceRoot: sb.Dir, MaxTotalBytes: 300}).Diff(ctx, DiffRequest{Path: repo, Staged: true})
	if err != nil {
		t.Fatal(err)
	}
	if !total.Truncated || len(total.Files) != 3 {
		t.Fatalf("total cap = %+v", total)
	}

	// A bad ref is a validation error, not a crash.
	if _, err := svc.Diff(ctx, DiffRequest{Path: repo, FromRef: "no-such-ref"}); !errors.Is(err, ErrValidation) {
		t.Fatalf("bad ref: %v", err)
	}
	if _, err := svc.Diff(ctx, DiffRequest{Path: repo, FromRef: "--output=/tmp/x"}); !errors.Is(err, ErrValidation) {
		t.Fatalf("option as ref: %v", err)
	}
}

func TestLogPaging(t *testing.T) {
	sb := gittest.New(t, "")
	repo := gittest.History(sb)
	svc := newService(sb, Options{})
	ctx := context.Background()
	var all []Commit
	for skip := 0; ; skip += 2 {
		page, err := svc.Log(ctx, LogRequest{Path: repo, MaxCount: 2, Skip: skip})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Commits...)
		if !page.HasMore {
			break
		}
	}
	if len(all) != 4 || all[0].Subject != "Merge branch 'feature'" || len(all[0].Parents) != 2 || all[3].Subject != "root commit" {
		t.Fatalf("history = %+v", all)
	}
	// Pathspec and an empty repository.
	page, err := svc.Log(ctx, LogRequest{Path: repo, Pathspec: []string{"feature.txt"}})
	if err != nil || len(page.Commits) != 1 || page.Commits[0].Body != "A body line.\n\nSecond paragraph." {
		t.Fatalf("pathspec log = %+v, %v", page, err)
	}
	sb.Git("", "init", "-q", "empty")
	page, err = svc.Log(ctx, LogRequest{Path: "empty"})
	if err != nil || len(page.Commits) != 0 || page.HasMore {
		t.Fatalf("empty log = %+v, %v", page, err)
	}
}

func TestShow(t *testing.T) {
	sb := gittest.New(t, "")
	repo := gittest.History(sb)
	svc := newService(sb, Options{})
	ctx := context.Background()

	show, err := svc.Show(ctx, ShowRequest{Path: repo, Ref: "HEAD~1"})
	if err != nil {
		t.Fatal(err)
	}
	if show.Commit == nil || show.Commit.Subject != "main: say more" || len(show.Diff.Files) != 1 || show.Diff.Files[0].Path != "code.go" {
		t.Fatalf("show = %+v", show)
	}
	// The root commit diffs against the empty tree.
	log, _ := svc.Log(ctx, LogRequest{Path: repo})
	root := log.Commits[len(log.Commits)-1].Hash
	show, err = svc.Show(ctx, ShowRequest{Path: repo, Ref: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(show.Diff.Files) != 1 || show.Diff.Files[0].Status != "added" {
		t.Fatalf("root show = %+v", show.Diff)
	}

	blob, err := svc.Show(ctx, ShowRequest{Path: repo, Ref: "HEAD", FilePath: "code.go", MaxBytesPerFile: 12})
	if err != nil {
		t.Fatal(err)
	}
	content, _ := base64.StdEncoding.DecodeString(blob.Blob.Content)
	if string(content) != "package main" || !blob.Blob.Truncated || blob.Blob.SizeBytes <= 12 {
		t.Fatalf("blob = %+v (%q)", blob.Blob, content)
	}
	if _, err := svc.Show(ctx, ShowRequest{Path: repo, Ref: "HEAD", FilePath: "nope.txt"}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "blob not found: HEAD:nope.txt") {
		t.Fatalf("missing blob: %v", err)
	}
}

func TestDetectRepos(t *testing.T) {
	sb := gittest.New(t, "")
	for _, r := range []string{"top", "a/nested", "a/b/c/too-deep"} {
		sb.Git("", "init", "-q", r)
	}
	repos, err := newService(sb, Options{}).DetectRepos(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(repos, ",") != "a/nested,top" {
		t.Fatalf("repos = %q", repos)
	}
}

func TestRepoWorkdir(t *testing.T) {
	for _, tt := range []struct{ root, in, want string }{
		{"", "", ""},
		{"", "/", ""},
		{"", "repo/", "repo"},
		{"", "a//b/", "a/b"},
		{"/ws", "", "/ws"},
		{"/ws/", "repo", "/ws/repo"},
	} {
		if got := New(nil, Options{WorkspaceRoot: tt.root}).repoWorkdir(tt.in); got != tt.want {
			t.Errorf("repoWorkdir(%q, %q) = %q, want %q", tt.root, tt.in, got, tt.want)
		}
	}
}
