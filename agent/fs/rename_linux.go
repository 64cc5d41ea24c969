package fs

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace fails with EEXIST when to exists, atomically.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	switch err {
	case nil:
		return nil
	case unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP:
		// An old kernel or a filesystem without RENAME_NOREPLACE.
		return renameChecked(from, to)
	}
	return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
}
