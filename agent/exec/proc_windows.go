package exec

import (
	"os"
	osexec "os/exec"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

// procTree is the command and everything it starts: on Windows, a job
// object the command is assigned to right after it starts. Children inherit
// the job, so terminating it ends the whole tree. The job kills on close
// (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE) while the command runs: the handle is
// the agent's alone (not inheritable), so when the agent dies, even killed,
// Windows closes it and the tree dies with it (kill-on-drop).
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
	// On failure the job still serves timeouts; only kill-on-drop is lost.
	_ = setKillOnClose(job, true)
	return &procTree{job: job}
}

// setKillOnClose turns the job's kill-on-close limit on or off.
func setKillOnClose(job windows.Handle, on bool) error {
	var info windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION
	if on {
		info.BasicLimitInformation.LimitFlags = windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
	}
	_, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info)))
	return err
}

// start starts the command and puts it in the job.
func (t *procTree) start(cmd *osexec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.job == 0 {
		return nil
	}
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(cmd.Process.Pid))
	if err != nil {
		return nil
	}
	defer windows.CloseHandle(h)
	t.assigned = windows.AssignProcessToJobObject(t.job, h) == nil
	return nil
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

// release closes the job handle once the command is done. Kill-on-close is
// lifted first, so background processes of a command that exited keep
// running, as on unix.
func (t *procTree) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.job != 0 {
		_ = setKillOnClose(t.job, false)
		windows.CloseHandle(t.job)
		t.job = 0
	}
}
