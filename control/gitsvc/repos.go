package gitsvc

import (
	"context"
	"path"
	"sort"
	"strings"
)

// DetectRepos lists the repositories within three levels of the workspace
// root, as paths relative to it ("" for the root itself).
func (s *Service) DetectRepos(ctx context.Context) ([]string, error) {
	out, _, _, err := s.run.Run(ctx, s.root, []string{"find", ".", "-maxdepth", "3", "-name", ".git", "-type", "d"})
	if err != nil {
		return nil, err
	}
	return ParseRepos(out), nil
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
