package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opengeni/opengeni-agent/internal/proctree"
)

// MarkerEnv is set (to the run id) in the environment of every process the
// harness starts. Agents pass their environment on to the commands they run,
// so every process a run caused carries it: that is how leftovers are found
// and how the harness leaves nothing behind.
const MarkerEnv = "OPENGENI_HARNESS_RUN"

// child is a process the harness started, in its own process group (so the
// terminal's Ctrl-C reaches only the harness, which then ends the group).
type child struct {
	cmd  *exec.Cmd
	tree *proctree.Tree // the process leads its own group
	done chan struct{}  // closed once reaped
	err  error
}

func startChild(name string, args, env []string, stdout, stderr io.Writer) (*child, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	tree := proctree.New(cmd, proctree.Options{})
	if err := tree.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{cmd: cmd, tree: tree, done: make(chan struct{})}
	go func() { c.err = tree.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// signal sends sig to the process only (not its group), as a crash or an
// operator would.
func (c *child) signal(sig syscall.Signal) error { return syscall.Kill(c.pid(), sig) }

// exited reports whether the process has been reaped.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to exit.
func (c *child) wait(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill ends the process group at once and reaps the leader.
func (c *child) kill() {
	_ = c.tree.Kill()
	c.wait(5 * time.Second)
}

// stop asks the process to exit (SIGTERM, also waking it if frozen) and
// kills its group after grace.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		_ = c.tree.Kill() // whatever it left in its group
		return
	}
	_ = syscall.Kill(c.pid(), syscall.SIGCONT)
	_ = c.signal(syscall.SIGTERM)
	if !c.wait(grace) {
		c.kill()
	}
	_ = c.tree.Kill()
}

// Alive reports whether pid is a live process (a zombie is dead: it only
// waits for its parent to reap it).
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// waitGone waits up to d for every pid to be gone and returns those still
// alive.
func waitGone(pids []int, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var alive []int
		for _, p := range pids {
			if Alive(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// MarkedProcesses lists the live processes whose environment carries the
// run's marker (never the harness itself).
func MarkedProcesses(runID string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte(MarkerEnv + "=" + runID + "\x00")
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, want) || !Alive(pid) {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// killPIDs sends SIGKILL to each pid (and its group, when it leads one).
func killPIDs(pids []int) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGCONT)
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// ProcMem is a process's resident memory, in KiB.
type ProcMem struct {
	RSSKiB, PeakKiB float64
}

// ReadMem reads VmRSS and VmHWM from /proc/<pid>/status.
func ReadMem(pid int) (ProcMem, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ProcMem{}, err
	}
	defer f.Close()
	var m ProcMem
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			m.RSSKiB, found = n, found+1
		case "VmHWM":
			m.PeakKiB, found = n, found+1
		}
	}
	if found != 2 {
		return m, errors.New("VmRSS/VmHWM not found in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, sc.Err()
}

// FDCount counts /proc/<pid>/fd.
func FDCount(pid int) (int, error) {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(entries), err
}

// readPID reads a pid a command wrote to a file, waiting up to d for it.
func readPID(path string, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no pid in %s after %v", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readProcFile reads /proc/<pid>/<name> ("" when it cannot).
func readProcFile(pid int, name string) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + name)
	return string(b)
}
