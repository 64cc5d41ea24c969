//go:build unix

package pty

import (
	"fmt"
	"os"
	osexec "os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/opengeni/opengeni-agent/internal/proctree"
)

// defaultShell is the login shell: $SHELL -l, else /bin/sh -l. The shell is
// looked up in the child's environment, so a request may pick it.
func defaultShell(env []string) []string {
	sh := lookupEnv(env, "SHELL")
	if sh == "" {
		sh = "/bin/sh"
	}
	return []string{sh, "-l"}
}

// unixProc is a child on a creack/pty pseudo-terminal. The master is
// re-opened non-blocking so it lives in the runtime poller: Close unblocks a
// pending Read, and Read does not pin an OS thread.
type unixProc struct {
	cmd    *osexec.Cmd
	tree   *proctree.Tree
	master *os.File
	once   sync.Once
}

func startProcess(argv []string, dir string, env []string, cols, rows uint16) (process, error) {
	path, err := lookPath(argv[0], dir, env)
	if err != nil {
		return nil, &spawnError{argv0: argv[0], err: err}
	}
	m, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("openpty: %w", err)
	}
	// pty.Open hands back a blocking master (it calls Fd); keep a
	// non-blocking duplicate the runtime poller can manage instead.
	nfd, err := unix.Dup(int(m.Fd()))
	m.Close()
	if err == nil {
		unix.CloseOnExec(nfd)
		err = unix.SetNonblock(nfd, true)
	}
	if err != nil {
		tty.Close()
		return nil, fmt.Errorf("openpty: %w", err)
	}
	master := os.NewFile(uintptr(nfd), "/dev/ptmx")
	p := &unixProc{master: master}
	if err := p.Resize(cols, rows); err != nil {
		tty.Close()
		master.Close()
		return nil, fmt.Errorf("openpty: set size: %w", err)
	}
	cmd := &osexec.Cmd{Path: path, Args: argv, Dir: dir, Env: env, Stdin: tty, Stdout: tty, Stderr: tty}
	// A new session whose controlling terminal is the pty (its stdin).
	tree := proctree.New(cmd, proctree.Options{Session: true})
	cmd.SysProcAttr.Setctty = true
	err = tree.Start()
	tty.Close()
	if err != nil {
		master.Close()
		return nil, &spawnError{argv0: argv[0], err: err}
	}
	p.cmd, p.tree = cmd, tree
	return p, nil
}

func (p *unixProc) Read(b []byte) (int, error)  { return p.master.Read(b) }
func (p *unixProc) Write(b []byte) (int, error) { return p.master.Write(b) }

func (p *unixProc) Resize(cols, rows uint16) error {
	sc, err := p.master.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	err = sc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows})
	})
	if err != nil {
		return err
	}
	return ierr
}

func (p *unixProc) Wait() (int, error) {
	err := p.tree.Wait()
	st, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		if err != nil {
			return -1, err
		}
		return p.cmd.ProcessState.ExitCode(), nil
	}
	switch {
	case st.Exited():
		return st.ExitStatus(), nil
	case st.Signaled():
		return 128 + int(st.Signal()), nil // what a shell reports as $?
	}
	return -1, err
}

// Hangup sends SIGHUP to the terminal's session (the child leads its own
// session and process group), like a closed terminal window.
func (p *unixProc) Hangup() error { return p.tree.Signal(syscall.SIGHUP) }

// Kill sends SIGKILL to the whole process group.
func (p *unixProc) Kill() error { return p.tree.Kill() }

func (p *unixProc) Close() error {
	var err error
	p.once.Do(func() { err = p.master.Close() })
	return err
}

// lookPath searches the child's PATH (the request may override it).
func lookPath(name, dir string, env []string) (string, error) {
	if containsSlash(name) {
		return name, nil
	}
	for _, d := range splitList(lookupEnv(env, "PATH")) {
		if d == "" {
			d = "."
		}
		if d[0] != '/' && dir != "" {
			d = dir + "/" + d
		}
		p := d + "/" + name
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &osexec.Error{Name: name, Err: osexec.ErrNotFound}
}

func containsSlash(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

func splitList(p string) []string {
	if p == "" {
		return nil
	}
	var out []string
	start := 0
	for i := 0; i < len(p); i++ {
		if p[i] == ':' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}

// SetWriteDeadline bounds a pty_write (the master is in the poller).
func (p *unixProc) SetWriteDeadline(t time.Time) error { return p.master.SetWriteDeadline(t) }
