package exec

import (
	"os"
	osexec "os/exec"
	"strconv"
	"sync"

	"golang.org/x/sys/windows"
)

// procTree is the command and everything it starts: on Windows, a job
// object the command is assigned to right after it starts. Children inherit
// the job, so terminating it ends the whole tree.
type procTree struct {
	mu       sync.Mutex
	job      windows.Handle
	assigned bool
}

func newProcTree(*osexec.Cmd) *procTree {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return &procTree{}
	}
	return &procTree{job: job}
}

func (t *procTree) started(p *os.Process) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.job == 0 {
		return
	}
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(p.Pid))
	if err != nil {
		return
	}
	defer windows.CloseHandle(h)
	t.assigned = windows.AssignProcessToJobObject(t.job, h) == nil
}

func (t *procTree) kill(p *os.Process) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.assigned && windows.TerminateJobObject(t.job, 1) == nil {
		return nil
	}
	// No job (creation or assignment failed, or the deadline raced the
	// assignment): taskkill walks the tree by parent pid.
	if osexec.Command("taskkill", "/T", "/F", "/PID", strconv.Itoa(p.Pid)).Run() == nil {
		return nil
	}
	return p.Kill()
}

// release closes the job handle. The job has no kill-on-close limit, so
// background processes of a command that exited normally keep running.
func (t *procTree) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.job != 0 {
		windows.CloseHandle(t.job)
		t.job = 0
	}
}
