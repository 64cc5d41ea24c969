//go:build windows

package pty

import (
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"strings"
	"sync"
	"unicode/utf16"
	"unsafe"

	"golang.org/x/sys/windows"
)

// defaultShell is %ComSpec%, else cmd.exe.
func defaultShell(env []string) []string {
	sh := lookupEnv(env, "ComSpec")
	if sh == "" {
		sh = "cmd.exe"
	}
	return []string{sh}
}

// winProc is a child attached to a ConPTY pseudo console (Windows 10 1809,
// build 17763, or later). Untested here: this repository's CI runs on Linux.
type winProc struct {
	hpc  windows.Handle
	in   *os.File // our end of the console's input pipe
	out  *os.File // our end of the console's output pipe
	proc *os.Process

	closeOnce sync.Once
	hpcMu     sync.Mutex
	hpcOpen   bool
}

func startProcess(argv []string, dir string, env []string, cols, rows uint16) (process, error) {
	path, err := osexec.LookPath(argv[0])
	if err != nil {
		return nil, &spawnError{argv0: argv[0], err: err}
	}
	var inR, inW, outR, outW windows.Handle
	if err := windows.CreatePipe(&inR, &inW, nil, 0); err != nil {
		return nil, fmt.Errorf("openpty: %w", err)
	}
	if err := windows.CreatePipe(&outR, &outW, nil, 0); err != nil {
		windows.CloseHandle(inR)
		windows.CloseHandle(inW)
		return nil, fmt.Errorf("openpty: %w", err)
	}
	var hpc windows.Handle
	err = windows.CreatePseudoConsole(windows.Coord{X: int16(min(cols, 32767)), Y: int16(min(rows, 32767))}, inR, outW, 0, &hpc)
	// The console holds its own references to its ends of the pipes.
	windows.CloseHandle(inR)
	windows.CloseHandle(outW)
	if err != nil {
		windows.CloseHandle(inW)
		windows.CloseHandle(outR)
		return nil, fmt.Errorf("openpty: CreatePseudoConsole: %w", err)
	}
	p := &winProc{hpc: hpc, hpcOpen: true,
		in: os.NewFile(uintptr(inW), "conpty-in"), out: os.NewFile(uintptr(outR), "conpty-out")}

	fail := func(err error) (process, error) {
		p.Close()
		return nil, &spawnError{argv0: argv[0], err: err}
	}
	attrs, err := windows.NewProcThreadAttributeList(1)
	if err != nil {
		return fail(err)
	}
	defer attrs.Delete()
	// The attribute's value is the HPCON itself, not a pointer to it.
	if err := attrs.Update(windows.PROC_THREAD_ATTRIBUTE_PSEUDOCONSOLE, *(*unsafe.Pointer)(unsafe.Pointer(&hpc)), unsafe.Sizeof(hpc)); err != nil {
		return fail(err)
	}
	si := &windows.StartupInfoEx{ProcThreadAttributeList: attrs.List()}
	si.Cb = uint32(unsafe.Sizeof(*si))
	// No inherited std handles: the child must use the pseudo console.
	si.Flags |= windows.STARTF_USESTDHANDLES

	appName, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return fail(err)
	}
	cmdLine, err := windows.UTF16PtrFromString(windows.ComposeCommandLine(argv))
	if err != nil {
		return fail(err)
	}
	var dirp *uint16
	if dir != "" {
		if dirp, err = windows.UTF16PtrFromString(dir); err != nil {
			return fail(err)
		}
	}
	envBlock, err := createEnvBlock(env)
	if err != nil {
		return fail(err)
	}
	var pi windows.ProcessInformation
	err = windows.CreateProcess(appName, cmdLine, nil, nil, false,
		windows.EXTENDED_STARTUPINFO_PRESENT|windows.CREATE_UNICODE_ENVIRONMENT,
		envBlock, dirp, &si.StartupInfo, &pi)
	if err != nil {
		return fail(err)
	}
	defer windows.CloseHandle(pi.Process)
	windows.CloseHandle(pi.Thread)
	// FindProcess opens its own handle while ours keeps the pid valid.
	proc, err := os.FindProcess(int(pi.ProcessId))
	if err != nil {
		windows.TerminateProcess(pi.Process, 1)
		return fail(err)
	}
	p.proc = proc
	return p, nil
}

func createEnvBlock(env []string) (*uint16, error) {
	var b []uint16
	for _, kv := range env {
		if strings.IndexByte(kv, 0) >= 0 {
			return nil, errors.New("environment contains a NUL byte")
		}
		b = append(b, utf16.Encode([]rune(kv))...)
		b = append(b, 0)
	}
	if len(b) == 0 {
		b = append(b, 0)
	}
	b = append(b, 0)
	return &b[0], nil
}

func (p *winProc) Read(b []byte) (int, error)  { return p.out.Read(b) }
func (p *winProc) Write(b []byte) (int, error) { return p.in.Write(b) }

func (p *winProc) Resize(cols, rows uint16) error {
	p.hpcMu.Lock()
	defer p.hpcMu.Unlock()
	if !p.hpcOpen {
		return os.ErrClosed
	}
	return windows.ResizePseudoConsole(p.hpc, windows.Coord{X: int16(min(cols, 32767)), Y: int16(min(rows, 32767))})
}

func (p *winProc) Wait() (int, error) {
	st, err := p.proc.Wait()
	if err != nil {
		return -1, err
	}
	return st.ExitCode(), nil
}

// Hangup closes the pseudo console, which sends CTRL_CLOSE_EVENT to every
// attached process (the console equivalent of SIGHUP). Our output reader
// keeps draining meanwhile, as ClosePseudoConsole requires on older builds.
func (p *winProc) Hangup() error {
	go p.closeConsole()
	return nil
}

// Kill terminates the process (not its descendants: no job object yet).
func (p *winProc) Kill() error { return p.proc.Kill() }

func (p *winProc) closeConsole() {
	p.hpcMu.Lock()
	defer p.hpcMu.Unlock()
	if p.hpcOpen {
		p.hpcOpen = false
		windows.ClosePseudoConsole(p.hpc)
	}
}

func (p *winProc) Close() error {
	p.closeOnce.Do(func() {
		p.in.Close()
		p.closeConsole() // ends the output pipe: a pending Read returns EOF
		p.out.Close()
	})
	return nil
}
