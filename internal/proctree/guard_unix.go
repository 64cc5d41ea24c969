//go:build unix

package proctree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	osexec "os/exec"
	"os/signal"
	"runtime"
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
		// Signals for the agent's terminal or service are not the guard's
		// cue; its cue is the pipe. (It runs in its own process group
		// anyway.) Ignored here, not in runGuard, which tests call in
		// process: an ignored SIGTERM is inherited by every later child.
		signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGPIPE)
		// fd 3 is the table (ExtraFiles[0]).
		os.Exit(runGuard(os.Stdin, os.NewFile(3, "killdrop-table")))
	}
}

// slotSize is one table entry: a pgid as a native-endian int32, 0 when free.
const slotSize = 4

// runGuard is the guard's whole life: wait for EOF on in, which comes when
// the agent's end of the pipe closes (the agent exited or was killed), then
// kill every group the table still lists. The agent writes the table
// without waking the guard, so an exec costs the agent two pwrites.
func runGuard(in io.Reader, table io.ReaderAt) int {
	_, _ = io.Copy(io.Discard, in) // nothing is ever written; returns at EOF or on error
	killListed(table)
	return 0
}

// killListed sends SIGKILL to every group in table.
func killListed(table io.ReaderAt) {
	buf := make([]byte, 64<<10)
	for off := int64(0); ; off += int64(len(buf)) {
		n, err := table.ReadAt(buf, off)
		for i := 0; i+slotSize <= n; i += slotSize {
			if pgid := int32(binary.NativeEndian.Uint32(buf[i:])); pgid > 1 {
				_ = unix.Kill(-int(pgid), unix.SIGKILL)
			}
		}
		if err != nil || n < len(buf) {
			return
		}
	}
}

// guard is this process's handle on its guard process and the table of live
// groups they share: an unlinked file, slot i at offset i*slotSize.
type guard struct {
	mu        sync.Mutex
	table     *os.File // nil until first use, or if it could not be made
	slots     map[int]int64
	free      []int64
	next      int64
	w         *os.File // write end of the guard's stdin; nil while none runs
	proc      *os.Process
	lastStart time.Time
	warned    bool
}

var theGuard = &guard{slots: map[int]int64{}}

// restartEvery bounds how often a guard that keeps dying is started again.
const restartEvery = time.Second

// track lists pgid; the guard kills the group if this process dies before
// untrack.
func (g *guard) track(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.table == nil {
		t, err := newTable()
		if err != nil {
			g.warnLocked(err)
			return
		}
		g.table = t
	}
	slot := g.next
	if n := len(g.free); n > 0 {
		slot, g.free = g.free[n-1], g.free[:n-1]
	} else {
		g.next++
	}
	if err := g.writeSlot(slot, pgid); err != nil {
		g.free = append(g.free, slot)
		g.warnLocked(err)
		return
	}
	g.slots[pgid] = slot
	if g.w == nil {
		g.startLocked()
	}
}

func (g *guard) untrack(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	slot, ok := g.slots[pgid]
	if !ok {
		return
	}
	delete(g.slots, pgid)
	if g.writeSlot(slot, 0) == nil {
		g.free = append(g.free, slot)
	} // else the slot is retired. Overwriting four allocated bytes of a
	// temp file does not fail in practice; if it did, the stale entry is a
	// group that no longer exists, unless its pid was reused.
}

func (g *guard) writeSlot(slot int64, pgid int) error {
	var b [slotSize]byte
	binary.NativeEndian.PutUint32(b[:], uint32(int32(pgid)))
	_, err := g.table.WriteAt(b[:], slot*slotSize)
	return err
}

// newTable is an unlinked temporary file: nothing to clean up, and the
// guard keeps it readable after the agent is gone.
func newTable() (*os.File, error) {
	f, err := os.CreateTemp("", "opengeni-killdrop-*")
	if err != nil {
		return nil, fmt.Errorf("killdrop table: %w", err)
	}
	_ = os.Remove(f.Name())
	return f, nil
}

func (g *guard) warnLocked(err error) {
	if !g.warned {
		g.warned = true
		slog.Warn("kill-on-drop guard unavailable: commands may outlive a crashed agent", "err", err)
	}
}

// startLocked starts a guard on the table. Failing to start is logged once
// and leaves commands unguarded (they still run).
func (g *guard) startLocked() {
	if !g.lastStart.IsZero() && time.Since(g.lastStart) < restartEvery {
		return // watch starts it when the time has come
	}
	g.lastStart = time.Now()
	if err := g.spawnLocked(); err != nil {
		g.warnLocked(err)
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
	cmd.ExtraFiles = []*os.File{g.table}
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
// someone, OOM) and starts another on the same table, once restartEvery
// has passed since the last start, if groups need guarding.
func (g *guard) watch(cmd *osexec.Cmd, w *os.File) {
	_ = cmd.Wait()
	g.mu.Lock()
	if g.w != w {
		g.mu.Unlock()
		return
	}
	w.Close()
	g.w, g.proc = nil, nil
	wait := restartEvery - time.Since(g.lastStart)
	g.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.w == nil && len(g.slots) > 0 {
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

// guarded is a started command's process group, listed with the guard.
type guarded struct{ pgid int }

// startGuarded starts cmd, which must lead its own process group (Setpgid,
// or Setsid, which makes it lead a new session and group), and lists the
// group so it is killed if this process dies before release.
func startGuarded(cmd *osexec.Cmd) (*guarded, error) {
	a := cmd.SysProcAttr
	if a == nil || !(a.Setsid || a.Setpgid && a.Pgid == 0) {
		return nil, errors.New("proctree: a guarded command must lead a new process group")
	}
	if err := startCmd(cmd); err != nil {
		return nil, err
	}
	pgid := cmd.Process.Pid
	theGuard.track(pgid)
	return &guarded{pgid: pgid}, nil
}

// release stops guarding the group: the command finished, and what it left
// running on purpose is no longer this process's to end.
func (g *guarded) release() {
	if g != nil {
		theGuard.untrack(g.pgid)
	}
}
