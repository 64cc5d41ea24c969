// Package fs serves the filesystem ops: read, write, list, mkdir, move, stat
// and remove, one file per op. Paths resolve against a workspace.Root; the
// agent has whole-machine access, so nothing is sandboxed.
package fs

import (
	"context"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
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

// specialKind names a file type fs_read and fs_write refuse ("" for the
// others): a FIFO's or socket's bytes belong to a peer process, and waiting
// for one could block forever.
func specialKind(m iofs.FileMode) string {
	switch {
	case m&iofs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&iofs.ModeSocket != 0:
		return "socket"
	}
	return ""
}

// specialFileError is the answer for reading or writing a FIFO or a socket.
func specialFileError(op, p, kind string) error {
	return agenterr.Unsupported("%s %s: the file is a %s, whose bytes belong to another process; %s works on regular files and devices",
		op, p, kind, op)
}

// openNoWait opens p without ever waiting (O_NONBLOCK: a FIFO without a peer
// or a device opens or fails at once) and refuses FIFOs and sockets by
// their type as opened (fstat), so a path swapped after a stat cannot slip
// through. ctxName prefixes errors ("read <p>", "open <p>").
func openNoWait(op, p string, flag int, perm iofs.FileMode, ctxName string) (*os.File, iofs.FileInfo, error) {
	f, err := os.OpenFile(p, flag|oNonBlock, perm)
	if err != nil {
		// ENXIO: a FIFO with no reader, or a socket, opened for writing.
		if fi, lerr := os.Stat(p); lerr == nil {
			if kind := specialKind(fi.Mode()); kind != "" {
				return nil, nil, specialFileError(op, p, kind)
			}
		}
		return nil, nil, agenterr.FromIO(ctxName, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, agenterr.FromIO(ctxName, err)
	}
	if kind := specialKind(fi.Mode()); kind != "" {
		f.Close()
		return nil, nil, specialFileError(op, p, kind)
	}
	return f, fi, nil
}

// isDevice reports a character or block device: read and written without
// waiting (what it has now; EAGAIN when it takes nothing now).
func isDevice(m iofs.FileMode) bool { return m&iofs.ModeDevice != 0 }

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
