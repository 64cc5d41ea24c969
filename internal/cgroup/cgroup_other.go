//go:build !linux

package cgroup

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
)

func removeDir(dir string) error { return os.Remove(dir) }

// Detect reports that per-op limits are Linux-only here: the leaves are
// cgroup v2 directories.
func Detect(log *slog.Logger, caps Policy) *Manager {
	return NewAt(log, caps, Support{Reason: "per-op resource limits need Linux cgroup v2; this machine runs " + runtime.GOOS})
}

func (m *Manager) newLeaf(Policy) (*Leaf, error) {
	return nil, errors.New("per-op resource limits need Linux cgroup v2")
}

func (l *Leaf) attach(*exec.Cmd) {}

func (l *Leaf) teardown() Outcome { return l.out }
