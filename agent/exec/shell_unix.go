//go:build unix

package exec

import (
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"

	"github.com/opengeni/opengeni-agent/internal/envmerge"
)

type shell struct {
	path    string
	args    []string
	cmdLine string // Windows only
}

// shellCommand runs script with $SHELL -c (the command's environment, so a
// request may pick its shell), falling back to /bin/sh.
func shellCommand(env []string, script string) shell {
	sh, _ := envmerge.Lookup(env, "SHELL")
	if sh == "" {
		sh = "/bin/sh"
	}
	return shell{path: sh, args: []string{sh, "-c", script}}
}

func setCmdLine(*osexec.Cmd, string) {}

// lookPathIn searches the command's PATH (the request may override it), with
// relative PATH entries taken against the command's cwd. A name with a slash
// is used as is; os/exec resolves a relative one against the cwd.
func lookPathIn(name, cwd string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathEnv, _ := envmerge.Lookup(env, "PATH")
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "." // POSIX: an empty entry is the current directory
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &osexec.Error{Name: name, Err: osexec.ErrNotFound}
}
