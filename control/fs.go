package control

import (
	"context"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// ReadFile reads a file. maxBytes > 0 reads at most that many bytes from the
// start; 0 reads to EOF. The whole reply must fit one transport message: use
// ReadFileAll for large files.
func (s *Session) ReadFile(ctx context.Context, path string, maxBytes int) ([]byte, error) {
	r, err := s.readRange(ctx, "readFile", path, 0, uint64(max(maxBytes, 0)))
	if err != nil {
		return nil, err
	}
	return r.GetContent(), nil
}

func (s *Session) readRange(ctx context.Context, method, path string, offset, length uint64) (*agentpb.FsReadResponse, error) {
	return invokeCase[*agentpb.ControlResponse_FsRead](ctx, s, method, func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_FsRead{FsRead: &agentpb.FsReadRequest{Path: s.path(path), Offset: offset, Length: length}}
	}, func(resp *agentpb.ControlResponse) *agentpb.FsReadResponse { return orEmpty(resp.GetFsRead()) })
}

// WriteOptions tunes WriteFile. A nil *WriteOptions means the defaults.
type WriteOptions struct {
	// CreateParents creates missing parent directories; nil means true.
	CreateParents *bool
	// Append appends instead of truncating.
	Append bool
	// Mode is the creation mode of a new file (unix); 0 is the agent's default.
	Mode uint32
}

// WriteFile writes content and returns the bytes written. The request must fit
// one transport message: use WriteFileAll for large files.
func (s *Session) WriteFile(ctx context.Context, path string, content []byte, opts *WriteOptions) (uint64, error) {
	return s.writeFile(ctx, "writeFile", path, content, opts)
}

func (s *Session) writeFile(ctx context.Context, method, path string, content []byte, opts *WriteOptions) (uint64, error) {
	w := &agentpb.FsWriteRequest{Path: s.path(path), Content: content, CreateParents: true}
	if opts != nil {
		if opts.CreateParents != nil {
			w.CreateParents = *opts.CreateParents
		}
		w.Append, w.Mode = opts.Append, opts.Mode
	}
	return invokeCase[*agentpb.ControlResponse_FsWrite](ctx, s, method, func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_FsWrite{FsWrite: w}
	}, bytesWritten)
}

// ListFiles lists a directory (recursively, depth first, when asked) and
// returns the agent's entries: paths relative to the listed directory.
func (s *Session) ListFiles(ctx context.Context, path string, recursive bool) ([]*agentpb.FsEntry, error) {
	return invokeCase[*agentpb.ControlResponse_FsList](ctx, s, "listFiles", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_FsList{FsList: &agentpb.FsListRequest{Path: s.path(path), Recursive: recursive}}
	}, func(resp *agentpb.ControlResponse) []*agentpb.FsEntry { return resp.GetFsList().GetEntries() })
}

// Entry types of DirEntry.Type.
const (
	EntryDir   = "dir"
	EntryFile  = "file"
	EntryOther = "other" // symlinks and anything else
)

// DirEntry is one ListDir entry.
type DirEntry struct {
	Name string
	Path string // as the agent reported it
	Type string // EntryDir, EntryFile or EntryOther
}

// ListDir lists one directory level.
func (s *Session) ListDir(ctx context.Context, path string) ([]DirEntry, error) {
	entries, err := s.ListFiles(ctx, path, false)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(entries))
	for _, e := range entries {
		t := EntryOther
		switch e.GetKind() {
		case agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY:
			t = EntryDir
		case agentpb.FsEntryKind_FS_ENTRY_KIND_FILE:
			t = EntryFile
		}
		out = append(out, DirEntry{Name: e.GetName(), Path: e.GetPath(), Type: t})
	}
	return out, nil
}

// Stat stats a path without following symlinks. A missing path is not an
// error: Exists is false.
func (s *Session) Stat(ctx context.Context, path string) (*agentpb.FsStatResponse, error) {
	return invokeCase[*agentpb.ControlResponse_FsStat](ctx, s, "statFile", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_FsStat{FsStat: &agentpb.FsStatRequest{Path: s.path(path)}}
	}, func(resp *agentpb.ControlResponse) *agentpb.FsStatResponse { return orEmpty(resp.GetFsStat()) })
}

// PathExists reports whether path exists on the machine.
func (s *Session) PathExists(ctx context.Context, path string) (bool, error) {
	st, err := s.Stat(ctx, path)
	if err != nil {
		return false, err
	}
	return st.GetExists(), nil
}

// Mkdir creates a directory (and its parents when parents is set); a non-zero
// mode is applied to it exactly (unix).
func (s *Session) Mkdir(ctx context.Context, path string, parents bool, mode uint32) error {
	return invokeAck[*agentpb.ControlResponse_FsMkdir](ctx, s, "mkdir", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_FsMkdir{FsMkdir: &agentpb.FsMkdirRequest{Path: s.path(path), Parents: parents, Mode: mode}}
	})
}

// Move renames from onto to. Without overwrite an existing destination is an
// OS error. It is a rename on the machine: no cross-device copy.
func (s *Session) Move(ctx context.Context, from, to string, overwrite bool) error {
	return invokeAck[*agentpb.ControlResponse_FsMove](ctx, s, "move", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_FsMove{FsMove: &agentpb.FsMoveRequest{From: s.path(from), To: s.path(to), Overwrite: overwrite}}
	})
}

// Remove deletes a file, a symlink, or a directory (its whole tree when
// recursive is set, else only when empty). A missing path is NOT_FOUND.
func (s *Session) Remove(ctx context.Context, path string, recursive bool) error {
	return invokeAck[*agentpb.ControlResponse_FsRemove](ctx, s, "remove", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_FsRemove{FsRemove: &agentpb.FsRemoveRequest{Path: s.path(path), Recursive: recursive}}
	})
}
