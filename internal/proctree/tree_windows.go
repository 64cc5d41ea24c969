package proctree

import (
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// platform is the job object the command is assigned to right after it
// starts.
type platform struct {
	mu          sync.Mutex
	job         windows.Handle
	assigned    bool
	killOnClose bool
}

// createNoWindow keeps a Session command and its children off any console.
const createNoWindow = 0x08000000

func (t *Tree) prepare() {
	if t.opts.Session {
		if t.cmd.SysProcAttr == nil {
			t.cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		t.cmd.SysProcAttr.CreationFlags |= syscall.CREATE_NEW_PROCESS_GROUP | createNoWindow
		t.cmd.SysProcAttr.HideWindow = true
	}
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return // Kill falls back to taskkill
	}
	t.plat.job = job
	if t.opts.KillOnDrop {
		// On failure the job still serves Kill; only kill-on-drop is lost.
		t.plat.killOnClose = setKillOnClose(job, true) == nil
	}
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
func (t *Tree) start() error {
	if err := t.cmd.Start(); err != nil {
		return err
	}
	p := &t.plat
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.job == 0 {
		return nil
	}
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(t.cmd.Process.Pid))
	if err != nil {
		return nil
	}
	defer windows.CloseHandle(h)
	p.assigned = windows.AssignProcessToJobObject(p.job, h) == nil
	return nil
}

func (t *Tree) kill() error {
	if t.cmd.Process == nil {
		return os.ErrProcessDone
	}
	p := &t.plat
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.assigned && windows.TerminateJobObject(p.job, 1) == nil {
		return nil
	}
	// No job (creation or assignment failed, or the kill raced the
	// assignment): taskkill walks the tree by parent pid.
	tk := exec.Command("taskkill", "/T", "/F", "/PID", strconv.Itoa(t.cmd.Process.Pid))
	tk.SysProcAttr = &syscall.SysProcAttr{CreationFlags: createNoWindow, HideWindow: true}
	if tk.Run() == nil {
		return nil
	}
	return t.cmd.Process.Kill()
}

func (t *Tree) signal(sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return t.kill()
	}
	return syscall.EWINDOWS
}

// release closes the job handle. Kill-on-close is lifted first, so what a
// command that exited left running keeps running, as on unix.
func (t *Tree) release() {
	p := &t.plat
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.job != 0 {
		if p.killOnClose {
			_ = setKillOnClose(p.job, false)
		}
		windows.CloseHandle(p.job)
		p.job, p.assigned = 0, false
	}
}
