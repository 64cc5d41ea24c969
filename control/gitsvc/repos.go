package gitsvc

import (
	"context"
	"path"
	"sort"
	"strings"
)

// DirLister is a Runner that can also list a directory's subdirectories
// on the machine (SessionRunner can, through the fs ops).
type DirLister interface {
	ListDirs(ctx context.Context, dir string) ([]string, error)
}

// repoSearchDepth is find's -maxdepth: a .git up to three levels down.
const repoSearchDepth = 3

// DetectRepos lists the repositories within three levels of the workspace
// root, as paths relative to it ("" for the root itself). It runs find
// (control.md §4.3); where find is missing or is not the Unix one
// (Windows' find.exe searches text and fails on these arguments) and the
// runner can list directories, it walks the levels itself.
func (s *Service) DetectRepos(ctx context.Context) ([]string, error) {
	out, _, code, err := s.run.Run(ctx, s.root, []string{"find", ".", "-maxdepth", "3", "-name", ".git", "-type", "d"})
	lister, canList := s.run.(DirLister)
	switch {
	case err != nil && canList && isNotFound(err):
		return s.walkRepos(ctx, lister)
	case err != nil:
		return nil, err
	}
	repos := ParseRepos(out)
	if code != 0 && len(repos) == 0 && canList {
		return s.walkRepos(ctx, lister)
	}
	return repos, nil
}

// walkRepos finds the .git directories level by level, like find: an
// unreadable directory below the root is skipped.
func (s *Service) walkRepos(ctx context.Context, l DirLister) ([]string, error) {
	repos := []string{}
	level := []string{""}
	for depth := 0; depth < repoSearchDepth && len(level) > 0; depth++ {
		var next []string
		for _, rel := range level {
			names, err := l.ListDirs(ctx, s.repoWorkdir(rel))
			if err != nil {
				if depth == 0 || ctx.Err() != nil {
					return nil, err
				}
				continue
			}
			for _, name := range names {
				if name == ".git" {
					repos = append(repos, rel)
				} else {
					next = append(next, path.Join(rel, name))
				}
			}
		}
		level = next
	}
	sort.Strings(repos)
	return repos, nil
}

// ParseRepos maps find's "./a/b/.git" lines to "a/b" ("./.git" to ""),
// sorted and deduplicated.
func ParseRepos(out []byte) []string {
	seen := map[string]bool{}
	repos := []string{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if path.Base(line) != ".git" {
			continue
		}
		dir := strings.TrimPrefix(path.Dir(line), "./")
		if dir == "." {
			dir = ""
		}
		if !seen[dir] {
			seen[dir] = true
			repos = append(repos, dir)
		}
	}
	sort.Strings(repos)
	return repos
}
