//go:build unix

package killdrop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	osexec "os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// guardEnv marks a re-executed binary as the guard. The value is specific
// enough that no user environment sets it by accident; the guard gets an
// environment with only this entry, so commands never inherit it.
const (
	guardEnv   = "OPENGENI_KILLDROP_GUARD"
	guardValue = "v1-7f3c9a"
)

// init turns any binary that links this package (the agent, a test binary)
// into the guard when started as one, before main or TestMain runs: the
// re-exec pattern of moby's reexec and similar libraries, without a
// subcommand the CLI would have to know about.
func init() {
	if os.Getenv(guardEnv) == guardValue {
		os.Exit(runGuard(os.Stdin))
	}
}

// runGuard is the guard's whole life: track "+pgid" and "-pgid" lines until
// the agent's end of the pipe closes, then kill what is left.
func runGuard(in io.Reader) int {
	// Signals for the agent's terminal or service are not the guard's cue;
	// its cue is the pipe. (It runs in its own process group anyway.)
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGPIPE)
	live := map[int]struct{}{}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
			continue
		}
		pgid, err := strconv.Atoi(line[1:])
		if err != nil || pgid <= 1 {
			continue
		}
		switch line[0] {
		case '+':
			live[pgid] = struct{}{}
		case '-':
			delete(live, pgid)
		}
	}
	// EOF (the agent exited or was killed) or a read error: either way no
	// one is left to end these groups.
	for pgid := range live {
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
	return 0
}

// guard is this process's handle on its guard process.
type guard struct {
	mu        sync.Mutex
	w         *os.File // write end of the guard's stdin; nil while none runs
	proc      *os.Process
	live      map[int]struct{}
	lastStart time.Time
	warned    bool
}

var theGuard = &guard{live: map[int]struct{}{}}

// restartEvery bounds how often a guard that keeps dying is started again.
const restartEvery = time.Second

// track registers pgid; the guard kills the group if this process dies
// before untrack.
func (g *guard) track(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live[pgid] = struct{}{}
	if g.w == nil {
		g.startLocked() // replays every live group, pgid included
		return
	}
	if g.sendLocked('+', pgid) != nil {
		g.stopLocked()
		g.startLocked()
	}
}

func (g *guard) untrack(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.live, pgid)
	if g.w != nil && g.sendLocked('-', pgid) != nil {
		g.stopLocked() // started again by the next track
	}
}

func (g *guard) sendLocked(op byte, pgid int) error {
	var b [24]byte
	line := strconv.AppendInt(append(b[:0], op), int64(pgid), 10)
	_, err := g.w.Write(append(line, '\n'))
	return err
}

// startLocked starts a guard and hands it every live group. Failing to start
// is logged once and leaves commands unguarded (they still run).
func (g *guard) startLocked() {
	if !g.lastStart.IsZero() && time.Since(g.lastStart) < restartEvery {
		return
	}
	g.lastStart = time.Now()
	if err := g.spawnLocked(); err != nil {
		if !g.warned {
			g.warned = true
			slog.Warn("kill-on-drop guard unavailable: commands may outlive a crashed agent", "err", err)
		}
		return
	}
	for pgid := range g.live {
		if g.sendLocked('+', pgid) != nil {
			g.stopLocked()
			return
		}
	}
}

func (g *guard) spawnLocked() error {
	exe, err := selfExecutable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("guard pipe: %w", err)
	}
	defer r.Close()
	cmd := osexec.Command(exe)
	cmd.Args = []string{"opengeni-killdrop-guard"}
	cmd.Env = []string{guardEnv + "=" + guardValue}
	cmd.Stdin = r
	cmd.Stderr = os.Stderr // a crash of the guard is worth seeing
	// Its own group: Ctrl-C or a kill of the agent's group must not take the
	// guard down before it did its job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start guard: %w", err)
	}
	g.w, g.proc = w, cmd.Process
	go g.watch(cmd, w)
	return nil
}

// watch notices a guard that died while this process lives (killed by
// someone, OOM) and starts another, once restartEvery has passed since the
// last start, if groups need guarding.
func (g *guard) watch(cmd *osexec.Cmd, w *os.File) {
	_ = cmd.Wait()
	g.mu.Lock()
	if g.w != w {
		g.mu.Unlock()
		return // already replaced
	}
	g.stopLocked()
	wait := restartEvery - time.Since(g.lastStart)
	g.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.w == nil && len(g.live) > 0 {
		g.startLocked()
	}
}

// pid is the running guard's pid, 0 if none (for tests).
func (g *guard) pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.proc == nil {
		return 0
	}
	return g.proc.Pid
}

func (g *guard) stopLocked() {
	if g.w != nil {
		g.w.Close()
		g.w, g.proc = nil, nil
	}
}

// selfExecutable is this process's binary. On Linux /proc/self/exe works
// even after the file was replaced by an update.
func selfExecutable() (string, error) {
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			return "/proc/self/exe", nil
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("guard executable: %w", err)
	}
	return exe, nil
}

// Group is a started command's process group, registered with the guard.
type Group struct{ pgid int }

// Start starts cmd, which must lead its own process group (SysProcAttr
// Setpgid), and registers the group so it is killed if this process dies
// before Release.
func Start(cmd *osexec.Cmd) (*Group, error) {
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setpgid || cmd.SysProcAttr.Pgid != 0 {
		return nil, errors.New("killdrop: command must lead a new process group")
	}
	if err := startCmd(cmd); err != nil {
		return nil, err
	}
	pgid := cmd.Process.Pid
	theGuard.track(pgid)
	return &Group{pgid: pgid}, nil
}

// Release stops guarding the group: the command finished, and what it left
// running on purpose is no longer this process's to end.
func (g *Group) Release() {
	if g != nil {
		theGuard.untrack(g.pgid)
	}
}
