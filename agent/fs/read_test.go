//go:build unix

package fs

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestReadRanges(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "digits"), "0123456789", 0o644)
	tests := []struct {
		offset, length uint64
		want           string
	}{
		{0, 0, "0123456789"},
		{3, 4, "3456"},
		{0, 1, "0"},
		{8, 0, "89"},
		{8, 10, "89"},
		{10, 0, ""},
		{100, 5, ""},
		{math.MaxUint64, math.MaxUint64, ""},
		{2, math.MaxUint64, "23456789"},
	}
	for _, tt := range tests {
		resp, err := s.Read(bg, &agentpb.FsReadRequest{Path: "digits", Offset: tt.offset, Length: tt.length})
		if err != nil {
			t.Fatalf("offset %d length %d: %v", tt.offset, tt.length, err)
		}
		if string(resp.Content) != tt.want || resp.TotalSize != 10 {
			t.Errorf("offset %d length %d: %q total %d, want %q total 10", tt.offset, tt.length, resp.Content, resp.TotalSize, tt.want)
		}
	}
}

func TestReadPaths(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "home", "h.txt"), "home", 0o644)
	mustWrite(t, filepath.Join(dir, "sub", "r.txt"), "rel", 0o644)
	for path, want := range map[string]string{
		"~/h.txt":                       "home",
		"sub/r.txt":                     "rel",
		filepath.Join(dir, "sub/r.txt"): "rel",
	} {
		resp, err := s.Read(bg, &agentpb.FsReadRequest{Path: path})
		if err != nil || string(resp.Content) != want {
			t.Errorf("Read(%q) = %v, %v; want %q", path, resp, err, want)
		}
	}
}

// A sparse 8 GiB file: a ranged read must not touch the rest of it.
func TestReadRangeOfHugeFile(t *testing.T) {
	s, dir := newService(t)
	p := filepath.Join(dir, "huge")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 30
	if _, err := f.WriteAt([]byte("tail"), size-4); err != nil {
		t.Skipf("no sparse files here: %v", err)
	}
	f.Close()
	resp, err := s.Read(bg, &agentpb.FsReadRequest{Path: "huge", Offset: size - 4, Length: 100})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Content) != "tail" || resp.TotalSize != size {
		t.Errorf("content %q total %d", resp.Content, resp.TotalSize)
	}
	// Without a transport limit the whole file is still refused, not buffered.
	_, err = s.Read(bg, &agentpb.FsReadRequest{Path: "huge"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, "")
}

func TestReadOverBudgetIsTooLarge(t *testing.T) {
	s, dir := newService(t)
	content := bytes.Repeat([]byte("x"), 10000)
	mustWrite(t, filepath.Join(dir, "big"), string(content), 0o644)
	ctx := opctx.WithMaxReply(bg, 8192)

	_, err := s.Read(ctx, &agentpb.FsReadRequest{Path: "big"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, "")
	d := agenterr.ToProto(err).Detail
	if d["op"] != "fs_read" || d["total_size"] != "10000" || d["requested_bytes"] != "10000" || d["max_payload"] != "8192" {
		t.Errorf("detail = %v", d)
	}
	maxRange, _ := strconv.Atoi(d["max_range_bytes"])
	if maxRange <= 0 || maxRange > opctx.PayloadBudget(ctx) {
		t.Fatalf("max_range_bytes = %q, want within the payload budget %d", d["max_range_bytes"], opctx.PayloadBudget(ctx))
	}

	// Following the hint works: ranges of max_range_bytes reassemble the file.
	var got []byte
	for off := 0; off < len(content); off += maxRange {
		resp, err := s.Read(ctx, &agentpb.FsReadRequest{Path: "big", Offset: uint64(off), Length: uint64(maxRange)})
		if err != nil {
			t.Fatalf("range at %d: %v", off, err)
		}
		got = append(got, resp.Content...)
	}
	if !bytes.Equal(got, content) {
		t.Errorf("reassembled %d bytes, want %d", len(got), len(content))
	}
}

func TestReadErrors(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "file"), "x", 0o644)
	tests := []struct {
		path  string
		code  agentpb.ErrorCode
		errno syscall.Errno
	}{
		{"missing", agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, 0},
		{".", agentpb.ErrorCode_ERROR_CODE_OS, syscall.EISDIR},
		{"file/below", agentpb.ErrorCode_ERROR_CODE_OS, syscall.ENOTDIR},
		{"nul\x00byte", agentpb.ErrorCode_ERROR_CODE_OS, syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, err := s.Read(bg, &agentpb.FsReadRequest{Path: tt.path})
			errno := ""
			if tt.errno != 0 {
				errno = strconv.Itoa(int(tt.errno))
			}
			wantCode(t, err, tt.code, errno)
		})
	}
}

func TestReadPermissionDenied(t *testing.T) {
	skipIfRoot(t)
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "secret"), "x", 0o000)
	_, err := s.Read(bg, &agentpb.FsReadRequest{Path: "secret"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.EACCES)))
}

// Files without a size (procfs, devices) are streamed, bounded by the budget.
func TestReadUnsizedFiles(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	s, _ := newService(t)
	resp, err := s.Read(bg, &agentpb.FsReadRequest{Path: "/proc/self/status"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(resp.Content, []byte("Pid:")) || resp.TotalSize != uint64(len(resp.Content)) {
		t.Errorf("content %d bytes total %d, want the whole status file", len(resp.Content), resp.TotalSize)
	}
	resp, err = s.Read(bg, &agentpb.FsReadRequest{Path: "/dev/zero", Offset: 10, Length: 100})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.Content, make([]byte, 100)) || resp.TotalSize != 111 {
		t.Errorf("got %d bytes total %d, want 100 zeros and a total saying more follows", len(resp.Content), resp.TotalSize)
	}
	_, err = s.Read(opctx.WithMaxReply(bg, 8192), &agentpb.FsReadRequest{Path: "/dev/zero"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, "")
}
