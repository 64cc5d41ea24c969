// Package instancelock keeps two agents from serving the same connection: an
// exclusive, non-blocking OS file lock held for the process lifetime (the OS
// releases it when the process dies), with the holder's pid written in the
// file so a contender can say who holds it (agent.md §1.3).
package instancelock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrContended is returned (wrapped in *ContendedError) when another process
// or another Lock in this process holds the lock.
var ErrContended = errors.New("instance lock is held by another process")

// ContendedError names the holder. HolderPID is 0 when the file's content is
// not a pid.
type ContendedError struct {
	Path      string
	HolderPID int
}

func (e *ContendedError) Error() string {
	return fmt.Sprintf("%s is held by %s", e.Path, e.Holder())
}

// Holder is "pid N" or "pid unknown".
func (e *ContendedError) Holder() string {
	if e.HolderPID <= 0 {
		return "pid unknown"
	}
	return "pid " + strconv.Itoa(e.HolderPID)
}

func (e *ContendedError) Unwrap() error { return ErrContended }

// Lock is a held instance lock.
type Lock struct {
	f    *os.File
	path string
}

// Acquire opens (creating, not truncating) path and takes the lock without
// blocking. On success the file holds the caller's pid (decimal, no
// newline). A held lock yields *ContendedError; any other failure is an
// ordinary error (callers may then run without a lock).
func Acquire(path string) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if held {
		pid := readPID(f)
		f.Close()
		return nil, &ContendedError{Path: path, HolderPID: pid}
	}
	if err := writePID(f, os.Getpid()); err != nil {
		_ = unlock(f)
		f.Close()
		return nil, fmt.Errorf("record pid in %s: %w", path, err)
	}
	return &Lock{f: f, path: path}, nil
}

// Path is the lock file.
func (l *Lock) Path() string { return l.path }

// Release clears the recorded pid and drops the lock. Safe to call twice.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := unlock(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// HolderPID reads the pid recorded in path without touching the lock (so a
// status query can never make a starting agent see contention). ok is false
// when no live process is recorded there.
func HolderPID(path string) (pid int, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	pid = readPID(f)
	if pid <= 0 || !processAlive(pid) {
		return 0, false
	}
	return pid, true
}

func readPID(f *os.File) int {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 31)
	if err != nil {
		return 0
	}
	return int(pid)
}

func writePID(f *os.File, pid int) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(pid)), 0)
	if err != nil {
		return err
	}
	return f.Sync()
}
