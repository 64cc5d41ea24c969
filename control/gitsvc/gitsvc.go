// Package gitsvc is the control plane's structured, read-only view of the
// git repositories on a connected machine (control.md §4.3): status, diff,
// log, show and repository discovery, each built from git commands run on
// the machine through a Runner and parsed here by pure functions.
package gitsvc

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Runner runs argv (no shell) in workdir on the machine. workdir "" means
// the session's default directory. A non-zero exit is not an error; err is
// for a command that could not be run at all.
type Runner interface {
	Run(ctx context.Context, workdir string, argv []string) (stdout, stderr []byte, exitCode int, err error)
}

// Defaults for the size caps.
const (
	DefaultMaxBytesPerFile = 256 << 10
	DefaultMaxTotalBytes   = 3 << 20
	DefaultContextLines    = 3
	DefaultLogCount        = 50
	MaxLogCount            = 1000
)

// Errors the service returns; test with errors.Is. The API maps
// ErrValidation to 400 and ErrNotFound to 404.
var (
	ErrNotFound   = errors.New("not found")
	ErrValidation = errors.New("validation failed")
)

// kindError is a message with a kind to match with errors.Is.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func notFound(format string, args ...any) error {
	return &kindError{ErrNotFound, fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &kindError{ErrValidation, fmt.Sprintf(format, args...)}
}

// Options configures a Service; zero values take the defaults.
type Options struct {
	// WorkspaceRoot prefixes repository paths; empty (the selfhosted case)
	// leaves them relative to the session's working directory.
	WorkspaceRoot string
	// MaxBytesPerFile is the default per-file diff and blob cap.
	MaxBytesPerFile int
	// MaxTotalBytes caps the hunks of one diff; files past it are listed
	// with their counts but no hunks, marked truncated.
	MaxTotalBytes int
}

// Service answers the structured git queries over a Runner.
type Service struct {
	run  Runner
	root string
	opts Options
}

// New returns a Service running its commands through run.
func New(run Runner, opts Options) *Service {
	if opts.MaxBytesPerFile <= 0 {
		opts.MaxBytesPerFile = DefaultMaxBytesPerFile
	}
	if opts.MaxTotalBytes <= 0 {
		opts.MaxTotalBytes = DefaultMaxTotalBytes
	}
	return &Service{run: run, root: strings.TrimSuffix(opts.WorkspaceRoot, "/"), opts: opts}
}

// normalizeRelPath strips leading and trailing slashes and cleans the path.
func normalizeRelPath(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return path.Clean(p)
}

// repoWorkdir is the directory git runs in for the repository at rel: the
// workspace root (or the session default, "") for the top.
func (s *Service) repoWorkdir(rel string) string {
	rel = normalizeRelPath(rel)
	switch {
	case rel == "" || rel == ".":
		return s.root
	case s.root == "":
		return rel
	}
	return s.root + "/" + rel
}

// git runs git with args in workdir.
func (s *Service) git(ctx context.Context, workdir string, args ...string) (stdout, stderr []byte, code int, err error) {
	stdout, stderr, code, err = s.run.Run(ctx, workdir, append([]string{"git"}, args...))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("git %s: %w", args[0], err)
	}
	return stdout, stderr, code, nil
}
