//go:build unix

package fs

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestStat(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "f.txt"), "12345", 0o640)
	if err := os.Symlink("f.txt", filepath.Join(dir, "ln")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		wantName string
		kind     agentpb.FsEntryKind
		mode     uint32
		size     uint64
	}{
		{"f.txt", "f.txt", agentpb.FsEntryKind_FS_ENTRY_KIND_FILE, syscall.S_IFREG | 0o640, 5},
		{"./f.txt", "f.txt", agentpb.FsEntryKind_FS_ENTRY_KIND_FILE, syscall.S_IFREG | 0o640, 5},
		{"ln", "ln", agentpb.FsEntryKind_FS_ENTRY_KIND_SYMLINK, syscall.S_IFLNK, 5},
		{"", filepath.Base(dir), agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY, syscall.S_IFDIR, 0},
		{"/", "", agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY, syscall.S_IFDIR, 0},
	}
	for _, tt := range tests {
		resp, err := s.Stat(bg, &agentpb.FsStatRequest{Path: tt.path})
		if err != nil {
			t.Fatalf("%q: %v", tt.path, err)
		}
		e := resp.Entry
		if !resp.Exists || e == nil {
			t.Fatalf("%q: exists %v entry %v", tt.path, resp.Exists, e)
		}
		if e.Name != tt.wantName || e.Path != tt.path || e.Kind != tt.kind {
			t.Errorf("%q: name %q path %q kind %v, want %q, the request path, %v", tt.path, e.Name, e.Path, e.Kind, tt.wantName, tt.kind)
		}
		if e.Mode&syscall.S_IFMT != tt.mode&syscall.S_IFMT || (tt.mode&0o777 != 0 && e.Mode != tt.mode) {
			t.Errorf("%q: mode %o, want %o", tt.path, e.Mode, tt.mode)
		}
		if tt.size != 0 && e.Size != tt.size {
			t.Errorf("%q: size %d, want %d", tt.path, e.Size, tt.size)
		}
		if e.ModifiedMs <= 0 {
			t.Errorf("%q: modified_ms %d", tt.path, e.ModifiedMs)
		}
	}
}

func TestStatMissing(t *testing.T) {
	s, _ := newService(t)
	resp, err := s.Stat(bg, &agentpb.FsStatRequest{Path: "nope/nothing"})
	if err != nil || resp.Exists || resp.Entry != nil {
		t.Fatalf("Stat = %v, %v; want exists=false and no entry", resp, err)
	}
}

func TestStatUnderFileIsENOTDIR(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "f"), "", 0o644)
	_, err := s.Stat(bg, &agentpb.FsStatRequest{Path: "f/x"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.ENOTDIR)))
}
