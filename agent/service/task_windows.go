//go:build windows

package service

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	ole "github.com/go-ole/go-ole"
)

// The Task Scheduler 2.0 COM objects queryTask uses.
var (
	clsidTaskScheduler = ole.NewGUID("{0F87369F-A4E5-4CFC-BD3E-73E6154572DD}")
	iidITaskService    = ole.NewGUID("{2FABA4C7-4DA9-4013-9697-20CC3FD40F85}")
)

// Vtable slots (IUnknown 0-2, IDispatch 3-6, then the interface's own).
const (
	slotRelease              = 2
	slotTaskServiceGetFolder = 7
	slotTaskServiceConnect   = 10
	slotFolderGetTask        = 13
	slotRegisteredTaskState  = 9
)

// HRESULTs queryTask tells apart.
const (
	sFalse         = 0x00000001 // CoInitializeEx: already initialised on this thread
	hrFileNotFound = 0x80070002 // HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)
	hrPathNotFound = 0x80070003
)

// queryTask asks the Task Scheduler's COM API for the task's TASK_STATE:
// a number, where schtasks.exe prints text in the display language. The
// calls go through the interfaces' vtables, not IDispatch (which wine does
// not implement for the Task Scheduler).
func queryTask(_ context.Context, name string) (installed bool, state int, err error) {
	// COM initialisation is per thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := ole.CoInitializeEx(0, ole.COINIT_MULTITHREADED); err != nil && hresult(err) != sFalse {
		return false, 0, fmt.Errorf("initialise COM: %w", err)
	}
	defer ole.CoUninitialize() // balances S_FALSE too

	unk, err := ole.CreateInstance(clsidTaskScheduler, iidITaskService)
	if err != nil {
		return false, 0, fmt.Errorf("connect to the Task Scheduler: %w", err)
	}
	service := unsafe.Pointer(unk)
	defer comRelease(service)
	// Connect(serverName, user, domain, password): empty VARIANTs, the local
	// machine as the current user. VARIANTs are passed by reference.
	var empty [4]ole.VARIANT
	if err := comCall(service, slotTaskServiceConnect, uintptr(unsafe.Pointer(&empty[0])),
		uintptr(unsafe.Pointer(&empty[1])), uintptr(unsafe.Pointer(&empty[2])), uintptr(unsafe.Pointer(&empty[3]))); err != nil {
		return false, 0, fmt.Errorf("connect to the Task Scheduler: %w", err)
	}

	var folder unsafe.Pointer
	if err := comCallBSTR(service, slotTaskServiceGetFolder, `\`, &folder); err != nil {
		return false, 0, fmt.Errorf("open the root task folder: %w", err)
	}
	defer comRelease(folder)
	var task unsafe.Pointer
	if err := comCallBSTR(folder, slotFolderGetTask, name, &task); err != nil {
		if hr := hresult(err); hr == hrFileNotFound || hr == hrPathNotFound {
			return false, 0, nil
		}
		return false, 0, fmt.Errorf("look up the %s task: %w", name, err)
	}
	defer comRelease(task)
	var st int32
	if err := comCall(task, slotRegisteredTaskState, uintptr(unsafe.Pointer(&st))); err != nil {
		return true, 0, fmt.Errorf("read the %s task's state: %w", name, err)
	}
	return true, int(st), nil
}

// comCall calls method slot of the COM object obj; a failed HRESULT is an
// *ole.OleError.
func comCall(obj unsafe.Pointer, slot int, args ...uintptr) error {
	vtbl := *(*unsafe.Pointer)(obj)
	fn := *(*uintptr)(unsafe.Add(vtbl, uintptr(slot)*unsafe.Sizeof(uintptr(0))))
	hr, _, _ := syscall.SyscallN(fn, append([]uintptr{uintptr(obj)}, args...)...)
	if int32(hr) < 0 {
		return ole.NewError(hr)
	}
	return nil
}

// comCallBSTR calls method(BSTR s, IUnknown **out).
func comCallBSTR(obj unsafe.Pointer, slot int, s string, out *unsafe.Pointer) error {
	b := ole.SysAllocString(s)
	defer ole.SysFreeString(b)
	return comCall(obj, slot, uintptr(unsafe.Pointer(b)), uintptr(unsafe.Pointer(out)))
}

// hresult is err's HRESULT, 0 when err is not a COM error.
func hresult(err error) uint32 {
	var oe *ole.OleError
	if errors.As(err, &oe) {
		return uint32(oe.Code())
	}
	return 0
}

func comRelease(obj unsafe.Pointer) { _ = comCall(obj, slotRelease) }
