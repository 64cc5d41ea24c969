package gittest

import "os"

// The scenarios: each builds repositories under the sandbox, the same
// commits with the same hashes every time, and returns the repository to
// look at (relative to the sandbox).

// AheadBehind: a clone one commit ahead of and one behind its
// bare origin, with a staged edit, an unstaged edit and an untracked file.
func AheadBehind(sb *Sandbox) string {
	sb.Git("", "init", "-q", "--bare", "origin.git")
	sb.Git("", "clone", "-q", "origin.git", "repo")
	sb.Commit("repo", "first", map[string]string{"a.txt": "one\n", "b.txt": "bee\n"})
	sb.Git("repo", "push", "-q", "-u", "origin", "main")
	sb.Git("", "clone", "-q", "origin.git", "other")
	sb.Commit("other", "theirs", map[string]string{"c.txt": "sea\n"})
	sb.Git("other", "push", "-q")
	sb.Write("repo/a.txt", "one\ntwo\n")
	sb.Git("repo", "commit", "-qam", "ours")
	sb.Git("repo", "fetch", "-q")
	sb.Write("repo/a.txt", "one\ntwo\nthree\n")
	sb.Write("repo/b.txt", "bee\nbuzz\n")
	sb.Git("repo", "add", "b.txt")
	sb.Write("repo/new.txt", "fresh\n")
	return "repo"
}

// Rename: a staged rename, a deletion, an untracked directory and
// ignored files.
func Rename(sb *Sandbox) string {
	sb.Git("", "init", "-q", "repo")
	sb.Commit("repo", "init", map[string]string{
		"old name.txt": "content that moves\nline two\n",
		"gone.txt":     "bye\n",
		".gitignore":   "*.log\nbuild/\n",
	})
	sb.Git("repo", "mv", "old name.txt", "new name.txt")
	sb.Git("repo", "rm", "-q", "gone.txt")
	sb.Write("repo/debug.log", "noise\n")
	sb.Write("repo/build/out.bin", "bin\n")
	sb.Write("repo/newdir/x.txt", "x\n")
	sb.Write("repo/newdir/y.txt", "y\n")
	return "repo"
}

// Conflict: a merge that conflicts on one file.
func Conflict(sb *Sandbox) string {
	sb.Git("", "init", "-q", "repo")
	sb.Commit("repo", "base", map[string]string{"f.txt": "base\n"})
	sb.Git("repo", "checkout", "-qb", "side")
	sb.Write("repo/f.txt", "side\n")
	sb.Git("repo", "commit", "-qam", "side")
	sb.Git("repo", "checkout", "-q", "main")
	sb.Write("repo/f.txt", "main\n")
	sb.Git("repo", "commit", "-qam", "main")
	if out, err := sb.GitErr("repo", "merge", "side"); err == nil {
		sb.T.Fatalf("merge should conflict: %s", out)
	}
	return "repo"
}

// Detached: HEAD detached at the first of two commits.
func Detached(sb *Sandbox) string {
	sb.Git("", "init", "-q", "repo")
	sb.Commit("repo", "one", map[string]string{"f.txt": "1\n"})
	sb.Write("repo/f.txt", "2\n")
	sb.Git("repo", "commit", "-qam", "two")
	sb.Git("repo", "checkout", "-q", "HEAD~1")
	sb.Write("repo/f.txt", "dirty\n")
	return "repo"
}

// Empty: a repository with no commits, one staged and one
// untracked file.
func Empty(sb *Sandbox) string {
	sb.Git("", "init", "-q", "repo")
	sb.Write("repo/staged.txt", "s\n")
	sb.Git("repo", "add", "staged.txt")
	sb.Write("repo/loose.txt", "l\n")
	return "repo"
}

// Unicode: names with spaces and non-ASCII characters, modified and
// untracked.
func Unicode(sb *Sandbox) string {
	sb.Git("", "init", "-q", "repo")
	sb.Commit("repo", "names", map[string]string{
		"dir with space/ünïcødé file.txt": "a\n",
		"日本語.md":                          "b\n",
	})
	sb.Write("repo/dir with space/ünïcødé file.txt", "a\nchanged\n")
	sb.Write("repo/日本語.md", "b\nchanged\n")
	sb.Write("repo/new ñame.txt", "n\n")
	return "repo"
}

// Submodule: a submodule moved to a new commit, and one with
// untracked content.
func Submodule(sb *Sandbox) string {
	sb.Git("", "init", "-q", "lib")
	sb.Commit("lib", "lib v1", map[string]string{"lib.txt": "v1\n"})
	sb.Git("", "init", "-q", "repo")
	sb.Commit("repo", "main", map[string]string{"main.txt": "m\n"})
	sb.Git("repo", "submodule", "add", "-q", "../lib", "moved")
	sb.Git("repo", "submodule", "add", "-q", "../lib", "dirty")
	sb.Git("repo", "commit", "-qm", "add submodules")
	sb.Write("repo/moved/lib.txt", "v2\n")
	sb.Git("repo/moved", "commit", "-qam", "lib v2")
	sb.Write("repo/dirty/untracked.txt", "u\n")
	return "repo"
}

// History: commits with a body, a merge and a binary file, for log,
// show and diff.
func History(sb *Sandbox) string {
	sb.Git("", "init", "-q", "repo")
	sb.Commit("repo", "root commit", map[string]string{"code.go": "package main\n\nfunc main() {\n\tprintln(\"hi\")\n}\n"})
	sb.Git("repo", "checkout", "-qb", "feature")
	sb.Write("repo/feature.txt", "feature work\n")
	sb.Git("repo", "add", ".")
	sb.Git("repo", "commit", "-qm", "feature: add file", "-m", "A body line.\n\nSecond paragraph.")
	sb.Git("repo", "checkout", "-q", "main")
	sb.Write("repo/code.go", "package main\n\nfunc main() {\n\tprintln(\"hello\")\n\tprintln(\"world\")\n}\n")
	sb.Git("repo", "commit", "-qam", "main: say more")
	sb.Git("repo", "merge", "-q", "--no-edit", "feature")
	// Worktree changes for diff: an edit with no final newline, a binary
	// file, an image, a rename with an edit, a deletion.
	sb.Write("repo/code.go", "package main\n\nfunc main() {\n\tprintln(\"hello\")\n}")
	if err := os.WriteFile(sb.Path("repo/blob.bin"), []byte{0, 1, 2, 3, 0, 255}, 0o644); err != nil {
		sb.T.Fatal(err)
	}
	sb.Write("repo/logo.svg", "<svg/>\n")
	sb.Git("repo", "add", "blob.bin", "logo.svg")
	sb.Git("repo", "mv", "feature.txt", "renamed feature.txt")
	sb.Write("repo/renamed feature.txt", "feature work\nmore\n")
	sb.Git("repo", "add", "renamed feature.txt")
	return "repo"
}
