// Package workspace resolves the paths and working directories of requests
// against the agent's workspace root. The agent has whole-machine access, so
// this is convenience (relative paths, ~), not a sandbox.
package workspace

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
)

// Root resolves request paths. The zero value resolves against the process
// working directory and the current user's home.
type Root struct {
	// Dir is the workspace root: where empty and relative paths point.
	Dir string
	// Home is what ~ expands to; empty means os.UserHomeDir at call time.
	Home string
}

// New returns a Root at dir; an empty dir means the process working directory.
func New(dir string) Root {
	if dir == "" {
		if wd, err := os.Getwd(); err == nil {
			dir = wd
		} else {
			dir = string(filepath.Separator)
		}
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return Root{Dir: dir}
}

// Resolve maps a request path to an absolute, cleaned OS path:
//
//	""            -> the workspace root
//	"~", "~/x"    -> the user's home (and below)
//	"/abs"        -> itself
//	"rel"         -> root/rel
//
// A path with a NUL byte is refused with an EINVAL error.
func (r Root) Resolve(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", agenterr.Invalid("path contains a NUL byte")
	}
	root := r.Dir
	if root == "" {
		root = New("").Dir
	}
	switch {
	case p == "":
		return filepath.Clean(root), nil
	case p == "~" || strings.HasPrefix(p, "~/") || (filepath.Separator == '\\' && strings.HasPrefix(p, `~\`)):
		home := r.Home
		if home == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return "", agenterr.Invalid("cannot expand ~: %v", err)
			}
			home = h
		}
		return filepath.Join(home, filepath.FromSlash(p[1:])), nil
	case filepath.IsAbs(p) || strings.HasPrefix(p, "/"):
		// "/x" is absolute for the platform even on Windows (current drive).
		return filepath.Clean(filepath.FromSlash(p)), nil
	default:
		return filepath.Join(root, filepath.FromSlash(p)), nil
	}
}
