package fs

import (
	"context"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"strconv"
	"syscall"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Read returns [offset, offset+length) of a file (length 0: to the end; an
// offset past the end: empty) and the file's size. Only the range is read.
// A range that cannot fit the reply is refused with PAYLOAD_TOO_LARGE and a
// hint to read in smaller ranges, never cut silently.
//
// Files whose size the OS does not know (procfs, devices) are read as a
// stream; their total_size is where the read stopped, plus one when more
// data followed. A device gives what it has now, never waiting for more; a
// FIFO or a socket is refused (UNSUPPORTED).
func (s *Service) Read(ctx context.Context, req *agentpb.FsReadRequest) (*agentpb.FsReadResponse, error) {
	p, err := s.root.Resolve(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("fs_read: %w", err)
	}
	if err := ctx.Err(); err != nil { // the deadline passed while queued for a slot
		return nil, fmt.Errorf("fs_read %s: %w", p, err)
	}
	f, fi, err := openNoWait("fs_read", p, os.O_RDONLY, 0, "read "+p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.IsDir() {
		return nil, agenterr.FromIO("read "+p, &iofs.PathError{Op: "read", Path: p, Err: syscall.EISDIR})
	}
	limit := budget(ctx)
	if fi.Mode().IsRegular() && fi.Size() > 0 {
		return readRange(ctx, f, p, uint64(fi.Size()), req, limit)
	}
	var r io.Reader = f
	if isDevice(fi.Mode()) {
		r = nowReader{f}
	}
	return readStream(ctx, f, r, p, req, limit)
}

func readRange(ctx context.Context, f *os.File, p string, size uint64, req *agentpb.FsReadRequest, limit int) (*agentpb.FsReadResponse, error) {
	start := min(req.GetOffset(), size)
	n := size - start
	if l := req.GetLength(); l > 0 {
		n = min(n, l)
	}
	if n > uint64(limit) {
		return nil, tooLargeRead(ctx, p, strconv.FormatUint(size, 10), n, limit)
	}
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, int64(start))
	if err != nil && err != io.EOF { // EOF: the file shrank since the stat
		return nil, agenterr.FromIO("read "+p, err)
	}
	return &agentpb.FsReadResponse{Content: buf[:m], TotalSize: size}, nil
}

// readStream reads r (f, or a view of f that never waits) from the
// request's offset.
func readStream(ctx context.Context, f *os.File, r io.Reader, p string, req *agentpb.FsReadRequest, limit int) (*agentpb.FsReadResponse, error) {
	off := req.GetOffset()
	if off > 0 {
		if off > uint64(1<<63-1) {
			return &agentpb.FsReadResponse{TotalSize: 0}, nil
		}
		if _, err := f.Seek(int64(off), io.SeekStart); err != nil {
			return nil, agenterr.FromIO("read "+p, err)
		}
	}
	want := uint64(limit)
	if l := req.GetLength(); l > 0 {
		want = min(want, l)
	}
	// One byte more tells whether the content goes on.
	buf, err := io.ReadAll(io.LimitReader(r, int64(want)+1))
	if err != nil {
		return nil, agenterr.FromIO("read "+p, err)
	}
	more := uint64(len(buf)) > want
	if more {
		buf = buf[:want]
		if l := req.GetLength(); l == 0 || l > uint64(limit) {
			return nil, tooLargeRead(ctx, p, "unknown", max(l, uint64(limit)+1), limit)
		}
	}
	total := off + uint64(len(buf))
	if more {
		total++
	}
	return &agentpb.FsReadResponse{Content: buf, TotalSize: total}, nil
}

func tooLargeRead(ctx context.Context, p, total string, requested uint64, limit int) error {
	return agenterr.TooLarge(map[string]string{
		"op":              "fs_read",
		"total_size":      total,
		"requested_bytes": strconv.FormatUint(requested, 10),
		"max_payload":     strconv.Itoa(opctx.ReplyLimit(ctx)),
		"max_range_bytes": strconv.Itoa(limit),
	}, "fs_read %s: the requested range is %d bytes, more than a reply on this connection can carry; read it in ranges (offset/length) of at most %d bytes",
		p, requested, limit)
}
