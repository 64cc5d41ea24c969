//go:build !linux

package cgroup

import (
	"errors"
	"log/slog"
	"os/exec"
	"runtime"
)

// Detect reports that per-op limits are Linux-only here: the leaves are
// cgroup v2 directories.
func Detect(log *slog.Logger, caps Policy) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{support: Support{Reason: "per-op resource limits need Linux cgroup v2; this machine runs " + runtime.GOOS},
		caps: caps, log: log}
}

func (m *Manager) newLeaf(Policy) (*Leaf, error) {
	return nil, errors.New("per-op resource limits need Linux cgroup v2")
}

func (l *Leaf) attach(*exec.Cmd) {}

func (l *Leaf) teardown() Outcome { return l.out }
