package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// agentChildEnv makes the test binary an agent-like process (see TestMain)
// that runs one exec in the directory it names.
const agentChildEnv = "OG_EXEC_TEST_AGENT_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(agentChildEnv); dir != "" {
		os.Exit(runAgentChild(dir))
	}
	os.Exit(m.Run())
}

// runAgentChild runs a command that backgrounds a long sleep, writes the
// shell's and the sleep's pids to dir/pids and waits: it should never
// return, the test kills this process first.
func runAgentChild(dir string) int {
	s := New(Options{Root: workspace.Root{Dir: dir}, Env: testEnv, Logger: slog.New(slog.DiscardHandler)})
	script := `sleep 600 & echo $$ $! > pids.tmp && mv pids.tmp pids; wait`
	resp, err := s.Exec(context.Background(), &agentpb.ExecRequest{Command: []string{script}, Shell: true})
	fmt.Fprintf(os.Stderr, "agent child: exec returned %v %v\n", resp, err)
	return 3
}

// TestExecTreeDiesWithAgentSIGKILL: an agent SIGKILLed while an exec runs
// takes the command's whole process tree with it (kill-on-drop), the
// backgrounded grandchild included.
func TestExecTreeDiesWithAgentSIGKILL(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	agent := osexec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), agentChildEnv+"="+dir)
	var stderr bytes.Buffer
	agent.Stderr = &stderr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()

	var procs []procID
	natstest.Eventually(t, 10*time.Second, func() error {
		select {
		case err := <-exited:
			t.Fatalf("agent child exited early: %v\n%s", err, stderr.String())
		default:
		}
		b, err := os.ReadFile(filepath.Join(dir, "pids"))
		if err != nil {
			return err
		}
		procs = procs[:0]
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return err
			}
			id, err := procIdentity(pid)
			if err != nil {
				return fmt.Errorf("process %d of the command not running: %w", pid, err)
			}
			procs = append(procs, id)
		}
		if len(procs) != 2 {
			return fmt.Errorf("pids file %q: want shell and sleep", b)
		}
		return nil
	})
	// Make sure the command is not gone already for another reason.
	for _, p := range procs {
		if !p.alive() {
			t.Fatalf("%v not running before the agent was killed", p)
		}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
	})

	if err := agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	natstest.Eventually(t, 10*time.Second, func() error {
		for _, p := range procs {
			if p.alive() {
				return fmt.Errorf("%v still running after the agent was SIGKILLed", p)
			}
		}
		return nil
	})
}

// procID is a process told apart from a later one reusing its pid by its
// start time.
type procID struct {
	pid   int
	start string
	comm  string
}

func (p procID) String() string { return fmt.Sprintf("%s (pid %d)", p.comm, p.pid) }

// procIdentity reads pid's start time and name; a zombie counts as gone (in
// a container nobody may reap a killed orphan).
func procIdentity(pid int) (procID, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procID{}, err
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procID{}, fmt.Errorf("bad stat %q", b)
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return procID{}, fmt.Errorf("bad stat %q", b)
	}
	if f[0] == "Z" || f[0] == "X" {
		return procID{}, errors.New("zombie")
	}
	return procID{pid: pid, start: f[19], comm: string(b[open+1 : end])}, nil
}

func (p procID) alive() bool {
	now, err := procIdentity(p.pid)
	return err == nil && now.start == p.start
}

func (p procID) kill() {
	if p.alive() {
		_ = unix.Kill(p.pid, unix.SIGKILL)
	}
}
