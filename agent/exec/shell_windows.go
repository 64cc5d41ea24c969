package exec

import (
	"errors"
	osexec "os/exec"
	"path/filepath"
	"strings"
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
	cs, _ := getenv(env, "ComSpec")
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

func envKeyEqual(a, b string) bool { return strings.EqualFold(a, b) }

// lookPathIn leaves PATHEXT and the other Windows search rules to os/exec,
// so the agent's PATH is searched; a relative name with a separator is taken
// against the command's cwd.
func lookPathIn(name, cwd string, _ []string) (string, error) {
	if strings.ContainsAny(name, `\/`) && !filepath.IsAbs(name) {
		name = filepath.Join(cwd, name)
	}
	p, err := osexec.LookPath(name)
	if errors.Is(err, osexec.ErrDot) {
		err = nil
	}
	return p, err
}
