package fs

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace fails with EEXIST when to exists, atomically.
func renameNoReplace(from, to string) error {
	err := unix.RenamexNp(from, to, unix.RENAME_EXCL)
	switch err {
	case nil:
		return nil
	case unix.EINVAL, unix.ENOTSUP:
		// A filesystem without RENAME_EXCL.
		return renameChecked(from, to)
	}
	return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
}
