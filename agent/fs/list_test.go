//go:build unix

package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// listTree builds:
//
//	a.txt  b/  b/c/  b/c/deep.txt  b/x.txt  dirlink -> b  link -> a.txt  z.txt
func listTree(t *testing.T, dir string) {
	t.Helper()
	mustWrite(t, filepath.Join(dir, "z.txt"), "zz", 0o600)
	mustWrite(t, filepath.Join(dir, "a.txt"), "aaa", 0o644)
	mustWrite(t, filepath.Join(dir, "b/x.txt"), "x", 0o644)
	mustWrite(t, filepath.Join(dir, "b/c/deep.txt"), "deep", 0o644)
	for _, d := range []string{"b", "b/c"} {
		if err := os.Chmod(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"link": "a.txt", "dirlink": "b"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestList(t *testing.T) {
	s, dir := newService(t)
	listTree(t, dir)
	resp, err := s.List(bg, &agentpb.FsListRequest{Path: ""})
	if err != nil {
		t.Fatal(err)
	}
	const (
		file = agentpb.FsEntryKind_FS_ENTRY_KIND_FILE
		d    = agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY
		ln   = agentpb.FsEntryKind_FS_ENTRY_KIND_SYMLINK
	)
	want := []struct {
		name string
		kind agentpb.FsEntryKind
		mode uint32 // 0: only the type bits are checked
		size uint64
	}{
		{"a.txt", file, syscall.S_IFREG | 0o644, 3},
		{"b", d, syscall.S_IFDIR | 0o755, 0},
		{"dirlink", ln, syscall.S_IFLNK, 1},
		{"link", ln, syscall.S_IFLNK, 5},
		{"z.txt", file, syscall.S_IFREG | 0o600, 2},
	}
	if len(resp.Entries) != len(want) {
		t.Fatalf("got %d entries (%v), want %d", len(resp.Entries), names(resp.Entries), len(want))
	}
	for i, w := range want {
		e := resp.Entries[i]
		if e.Name != w.name || e.Path != w.name || e.Kind != w.kind {
			t.Errorf("entry %d = %q path %q kind %v, want %q %v", i, e.Name, e.Path, e.Kind, w.name, w.kind)
		}
		if e.Mode&syscall.S_IFMT != w.mode&syscall.S_IFMT || (w.mode&0o7777 != 0 && e.Mode != w.mode) {
			t.Errorf("%s mode %o, want %o (raw st_mode with type bits)", w.name, e.Mode, w.mode)
		}
		if w.kind != d && e.Size != w.size {
			t.Errorf("%s size %d, want %d", w.name, e.Size, w.size)
		}
		if e.ModifiedMs <= 0 {
			t.Errorf("%s modified_ms %d", w.name, e.ModifiedMs)
		}
	}
}

func TestListRecursiveDepthFirst(t *testing.T) {
	s, dir := newService(t)
	listTree(t, filepath.Join(dir, "top"))
	resp, err := s.List(bg, &agentpb.FsListRequest{Path: "top", Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a.txt", "b", "b/c", "b/c/deep.txt", "b/x.txt", "dirlink", "link", "z.txt"}
	var got []string
	for _, e := range resp.Entries {
		got = append(got, e.Path)
		if e.Name != filepath.Base(e.Path) {
			t.Errorf("name %q does not end path %q", e.Name, e.Path)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("paths %v, want %v (depth-first, symlinked dir not entered)", got, want)
	}
}

func TestListErrors(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "f"), "", 0o644)
	_, err := s.List(bg, &agentpb.FsListRequest{Path: "missing"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "")
	_, err = s.List(bg, &agentpb.FsListRequest{Path: "f"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.ENOTDIR)))
}

func TestListOverBudgetIsTooLarge(t *testing.T) {
	s, dir := newService(t)
	for i := range 300 {
		mustWrite(t, filepath.Join(dir, "many", fmt.Sprintf("file-with-a-longish-name-%03d", i)), "", 0o644)
	}
	ctx := opctx.WithMaxReply(bg, 8192)
	_, err := s.List(ctx, &agentpb.FsListRequest{Path: "many"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, "")
	if d := agenterr.ToProto(err).Detail; d["op"] != "fs_list" || d["max_payload"] != "8192" {
		t.Errorf("detail %v", d)
	}
	// Without a small limit the same listing fits.
	resp, err := s.List(bg, &agentpb.FsListRequest{Path: "many"})
	if err != nil || len(resp.Entries) != 300 {
		t.Fatalf("unbounded list: %d entries, %v", len(resp.GetEntries()), err)
	}
}

func TestListHonoursCancel(t *testing.T) {
	s, dir := newService(t)
	listTree(t, dir)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	_, err := s.List(ctx, &agentpb.FsListRequest{Recursive: true})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// An entry removed between readdir and lstat is skipped, not an abort.
func TestListSkipsVanishedEntries(t *testing.T) {
	_, dir := newService(t)
	listTree(t, dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "a.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "b", "c")); err != nil {
		t.Fatal(err)
	}
	l := &lister{ctx: bg, root: dir, limit: 1 << 20, recursive: true}
	if err := l.walk(dir, "", ents); err != nil {
		t.Fatalf("walk: %v", err)
	}
	got := fmt.Sprint(names(l.entries))
	if want := "[b x.txt dirlink link z.txt]"; got != want {
		t.Errorf("names %s, want %s", got, want)
	}
}

func TestListSkipsUnreadableSubdir(t *testing.T) {
	skipIfRoot(t)
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "locked/secret"), "", 0o644)
	mustWrite(t, filepath.Join(dir, "open/file"), "", 0o644)
	if err := os.Chmod(filepath.Join(dir, "locked"), 0o000); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "locked"), 0o755) })
	resp, err := s.List(bg, &agentpb.FsListRequest{Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(names(resp.Entries)); got != "[locked open file]" {
		t.Errorf("names %s", got)
	}
}

func names(es []*agentpb.FsEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}
