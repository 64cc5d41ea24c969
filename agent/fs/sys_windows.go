package fs

import (
	iofs "io/fs"
	"os"

	"golang.org/x/sys/windows"
)

var (
	errExist       error = windows.ERROR_ALREADY_EXISTS
	errCrossDevice error = windows.ERROR_NOT_SAME_DEVICE
	errBusy        error = windows.ERROR_SHARING_VIOLATION
	errReadOnlyFS  error = windows.ERROR_WRITE_PROTECT
)

// oNonBlock is 0: Windows has no FIFOs in the file system to wait on.
const oNonBlock = 0

// nowReader is a plain reader: Windows files are read as they come.
type nowReader struct{ f *os.File }

func (r nowReader) Read(p []byte) (int, error) { return r.f.Read(p) }

func writeNow(f *os.File, p []byte) error {
	_, err := f.Write(p)
	return err
}

// rawMode is 0: Windows has no st_mode.
func rawMode(iofs.FileInfo) uint32 { return 0 }

func preserveOwner(*os.File, iofs.FileInfo) {}

func syncDir(string) {}

// checkWritable has nothing to do: replacing a read-only file fails on its own.
func checkWritable(string) error { return nil }

func renameReplace(from, to string) error { return os.Rename(from, to) }

// renameNoReplace: MoveFileEx without MOVEFILE_REPLACE_EXISTING fails when
// to exists, atomically.
func renameNoReplace(from, to string) error {
	f, err := windows.UTF16PtrFromString(from)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	t, err := windows.UTF16PtrFromString(to)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	if err := windows.MoveFileEx(f, t, 0); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
