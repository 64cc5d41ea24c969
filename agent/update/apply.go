package update

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
)

// PreviousPath is where Swap keeps the binary it replaced.
func PreviousPath(path string) string { return path + ".previous" }

// Swap installs data at path atomically and keeps the binary it replaces
// at PreviousPath(path) (replacing an older one). It writes <path>.new
// beside the target (same filesystem), makes it executable, syncs it, and
// renames it over path: a reader sees the old or the new file, never a
// partial one. On unix the previous binary is hard-linked (copied when
// linking fails) before the rename, so path never disappears; on Windows a
// running executable cannot be replaced but can be renamed, so path is
// renamed aside first and restored if the final rename fails. It returns
// whether a previous binary was kept (false for a first install).
func Swap(path string, data []byte) (keptPrevious bool, err error) {
	tmp := path + ".new"
	if err := writeExecutable(tmp, data); err != nil {
		return false, err
	}
	defer os.Remove(tmp) // no-op once renamed
	prev := PreviousPath(path)
	_, statErr := os.Stat(path)
	exists := statErr == nil
	if exists {
		if err := os.Remove(prev); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("remove stale %s: %w", prev, err)
		}
	}
	if runtime.GOOS == "windows" {
		if exists {
			if err := os.Rename(path, prev); err != nil {
				return false, fmt.Errorf("move the running binary aside: %w", err)
			}
		}
		if err := os.Rename(tmp, path); err != nil {
			if exists {
				_ = os.Rename(prev, path)
			}
			return false, fmt.Errorf("install the new binary: %w", err)
		}
		return exists, nil
	}
	if exists {
		if err := os.Link(path, prev); err != nil {
			if err := copyFile(path, prev); err != nil {
				return false, fmt.Errorf("keep the previous binary: %w", err)
			}
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("install the new binary: %w", err)
	}
	return exists, nil
}

// Rollback puts PreviousPath(path) back at path. Without a previous binary
// it returns ErrNoBackup and leaves path untouched.
func Rollback(path string) error {
	prev := PreviousPath(path)
	if _, err := os.Stat(prev); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNoBackup, prev, err)
	}
	if runtime.GOOS == "windows" {
		// A running image can be renamed but not overwritten.
		aside := path + ".failed"
		_ = os.Remove(aside)
		if err := os.Rename(path, aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("move the failed binary aside: %w", err)
		}
	}
	if err := os.Rename(prev, path); err != nil {
		return fmt.Errorf("restore %s: %w", prev, err)
	}
	return nil
}

func writeExecutable(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("stage the new binary: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o755) // umask may have narrowed the create mode
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("stage the new binary: %w", err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}
