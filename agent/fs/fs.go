// Package fs serves the filesystem ops: read, write, list, mkdir, move, stat
// and remove, one file per op. Paths resolve against a workspace.Root; the
// agent has whole-machine access, so nothing is sandboxed.
package fs

import (
	"context"
	iofs "io/fs"
	"path/filepath"

	"github.com/opengeni/opengeni-agent/agent/opctx"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// fieldOverhead bounds what a response needs beyond its main byte payload
// (tags, lengths, total_size).
const fieldOverhead = 32

// Service serves the fs ops. It holds no state beyond the root and is safe
// for concurrent use.
type Service struct {
	root workspace.Root
}

// New returns a Service resolving paths against root.
func New(root workspace.Root) *Service {
	return &Service{root: root}
}

// budget is how many payload bytes a reply may carry, never unbounded.
func budget(ctx context.Context) int {
	return max(opctx.BoundedPayloadBudget(ctx)-fieldOverhead, 0)
}

// entryFor describes an lstat result. mode is the raw unix st_mode with the
// file-type bits (0 on Windows), which the wire carries as is.
func entryFor(name, path string, fi iofs.FileInfo) *agentpb.FsEntry {
	e := &agentpb.FsEntry{
		Name: name,
		Path: path,
		Kind: kindOf(fi.Mode()),
		Size: uint64(max(fi.Size(), 0)),
		Mode: rawMode(fi),
	}
	if mt := fi.ModTime(); !mt.IsZero() {
		e.ModifiedMs = mt.UnixMilli()
	}
	return e
}

func kindOf(m iofs.FileMode) agentpb.FsEntryKind {
	switch {
	case m&iofs.ModeSymlink != 0:
		return agentpb.FsEntryKind_FS_ENTRY_KIND_SYMLINK
	case m.IsDir():
		return agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY
	default:
		// Devices, FIFOs and sockets are files to the wire; mode tells them apart.
		return agentpb.FsEntryKind_FS_ENTRY_KIND_FILE
	}
}

// fileMode turns wire permission bits (unix 0o7777) into an fs.FileMode.
func fileMode(m uint32) iofs.FileMode {
	fm := iofs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= iofs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= iofs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= iofs.ModeSticky
	}
	return fm
}

// baseName is the last component of a resolved path, "" for a root.
func baseName(p string) string {
	name := filepath.Base(p)
	if name == "." || name == string(filepath.Separator) || name == filepath.VolumeName(p)+string(filepath.Separator) {
		return ""
	}
	return name
}
