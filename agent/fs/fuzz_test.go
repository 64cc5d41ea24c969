package fs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// FuzzRead throws arbitrary paths and ranges at Read, Stat and List inside a
// temp tree: no panic, replies within the budget, and every error maps to a
// code a client knows.
func FuzzRead(f *testing.F) {
	f.Add("file", uint64(0), uint64(0), uint16(0))
	f.Add("file", uint64(3), uint64(4), uint16(100))
	f.Add("dir/inner", uint64(1<<63), uint64(1<<63), uint16(9000))
	f.Add("dir", uint64(0), uint64(1), uint16(1))
	f.Add("link", uint64(5), uint64(0), uint16(0))
	f.Add("file/below", uint64(0), uint64(0), uint16(0))
	f.Add("nul\x00", uint64(0), uint64(0), uint16(0))
	f.Add("", uint64(0), uint64(0), uint16(0))
	f.Add("./dir//inner/", uint64(0), uint64(10), uint16(0))

	s, dir := newService(f)
	mustWrite(f, filepath.Join(dir, "file"), "0123456789", 0o644)
	mustWrite(f, filepath.Join(dir, "dir", "inner"), strings.Repeat("i", 5000), 0o644)
	if err := os.Symlink("file", filepath.Join(dir, "link")); err != nil {
		f.Fatal(err)
	}
	known := map[agentpb.ErrorCode]bool{
		agentpb.ErrorCode_ERROR_CODE_NOT_FOUND:         true,
		agentpb.ErrorCode_ERROR_CODE_OS:                true,
		agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE: true,
	}

	f.Fuzz(func(t *testing.T, path string, offset, length uint64, maxReply uint16) {
		// Stay inside the temp tree: the agent has whole-machine access, the
		// fuzzer must not read /dev or the home directory.
		if filepath.IsAbs(path) || strings.HasPrefix(path, "/") || strings.HasPrefix(path, "~") || strings.Contains(path, "..") || strings.Contains(path, `\`) {
			t.Skip()
		}
		ctx := bg
		if maxReply > 0 {
			ctx = opctx.WithMaxReply(bg, int(maxReply))
		}
		checkErr := func(op string, err error) {
			if err == nil {
				return
			}
			pe := agenterr.ToProto(err)
			if !known[pe.Code] || pe.Message == "" {
				t.Fatalf("%s %q: error %v maps to %v %q", op, path, err, pe.Code, pe.Message)
			}
		}

		resp, err := s.Read(ctx, &agentpb.FsReadRequest{Path: path, Offset: offset, Length: length})
		checkErr("read", err)
		if err == nil {
			if length > 0 && uint64(len(resp.Content)) > length {
				t.Fatalf("read %q: %d bytes for length %d", path, len(resp.Content), length)
			}
			if b := opctx.PayloadBudget(ctx); b > 0 && len(resp.Content) > b {
				t.Fatalf("read %q: %d bytes over the budget %d", path, len(resp.Content), b)
			}
			if offset >= resp.TotalSize && len(resp.Content) != 0 {
				t.Fatalf("read %q: content past EOF", path)
			}
		}

		st, err := s.Stat(ctx, &agentpb.FsStatRequest{Path: path})
		checkErr("stat", err)
		if err == nil && st.Exists && st.Entry.GetPath() != path {
			t.Fatalf("stat %q: entry path %q, want the request path", path, st.Entry.GetPath())
		}

		_, err = s.List(ctx, &agentpb.FsListRequest{Path: path, Recursive: length%2 == 1})
		checkErr("list", err)
	})
}
