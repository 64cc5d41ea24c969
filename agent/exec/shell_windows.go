package exec

import (
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"

	"github.com/opengeni/opengeni-agent/internal/envmerge"
	"syscall"
)

type shell struct {
	path    string
	args    []string
	cmdLine string
}

// shellCommand runs script with %ComSpec% /S /C "<script>". The command line
// is built by hand: with /S, cmd strips exactly the outer quotes and runs the
// rest verbatim, where os/exec's quoting would escape the user's own quotes.
func shellCommand(env []string, script string) shell {
	cs, _ := envmerge.Lookup(env, "ComSpec")
	if cs == "" {
		cs = "cmd.exe"
	}
	return shell{
		path:    cs,
		args:    []string{cs, "/S", "/C", script},
		cmdLine: syscall.EscapeArg(cs) + ` /S /C "` + script + `"`,
	}
}

func setCmdLine(cmd *osexec.Cmd, line string) {
	if line == "" {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.CmdLine = line
}

// lookPathIn finds a program the way Windows does, but with the command's
// own environment and cwd rather than the agent's: a relative name with a
// separator is taken against cwd; a bare name is searched in cwd (unless
// NoDefaultCurrentDirectoryInExePath is set) and then in the request's PATH,
// relative entries against cwd; each candidate is tried as is when it has an
// extension, then with every PATHEXT extension. The result is absolute
// (or rooted), so os/exec neither searches again nor refuses it as found
// relative to the agent's current directory (ErrDot).
func lookPathIn(name, cwd string, env []string) (string, error) {
	pathExt, _ := envmerge.Lookup(env, "PATHEXT")
	exts := pathExts(pathExt)
	if strings.ContainsAny(name, `:\/`) {
		// A rooted (\x) or drive-relative (C:x) name is the OS's to resolve.
		if filepath.VolumeName(name) == "" && !os.IsPathSeparator(name[0]) {
			name = filepath.Join(cwd, name)
		}
		if p, err := findExecutable(name, exts); err == nil {
			return p, nil
		}
		return "", &osexec.Error{Name: name, Err: osexec.ErrNotFound}
	}
	for _, dir := range searchDirs(cwd, env) {
		if p, err := findExecutable(filepath.Join(dir, name), exts); err == nil {
			return p, nil
		}
	}
	return "", &osexec.Error{Name: name, Err: osexec.ErrNotFound}
}

// searchDirs is where a bare program name is looked for, in order.
func searchDirs(cwd string, env []string) []string {
	var dirs []string
	if _, off := envmerge.Lookup(env, "NoDefaultCurrentDirectoryInExePath"); !off {
		dirs = append(dirs, cwd)
	}
	pathEnv, _ := envmerge.Lookup(env, "PATH")
	for _, dir := range filepath.SplitList(pathEnv) { // strips "quoted" entries
		if dir == "" {
			continue
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		dirs = append(dirs, dir)
	}
	return dirs
}

// pathExts parses PATHEXT (".COM;.EXE;...") into lower-case extensions,
// with Windows' default set when it is empty.
func pathExts(pathExt string) []string {
	var exts []string
	for _, e := range strings.Split(strings.ToLower(pathExt), ";") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if e[0] != '.' {
			e = "." + e
		}
		exts = append(exts, e)
	}
	if len(exts) == 0 {
		exts = []string{".com", ".exe", ".bat", ".cmd"}
	}
	return exts
}

// findExecutable is file itself when it has an extension and exists, else
// file with the first extension that exists (os/exec's rule, so
// "foo.bat.exe" resolves).
func findExecutable(file string, exts []string) (string, error) {
	if hasExt(file) && isFile(file) {
		return file, nil
	}
	for _, e := range exts {
		if isFile(file + e) {
			return file + e, nil
		}
	}
	return "", osexec.ErrNotFound
}

func hasExt(file string) bool {
	i := strings.LastIndex(file, ".")
	return i >= 0 && strings.LastIndexAny(file, `:\/`) < i
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}
