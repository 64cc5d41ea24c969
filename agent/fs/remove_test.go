//go:build unix

package fs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestRemove(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "f"), "x", 0o644)
	mustWrite(t, filepath.Join(dir, "tree/a/b"), "x", 0o644)
	mustWrite(t, filepath.Join(dir, "target"), "keep", 0o644)
	if err := os.Symlink("target", filepath.Join(dir, "ln")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("tree", filepath.Join(dir, "dirln")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}

	_, err := s.Remove(bg, &agentpb.FsRemoveRequest{Path: "tree"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.ENOTEMPTY)))

	for _, req := range []*agentpb.FsRemoveRequest{
		{Path: "f"},
		{Path: "ln"},
		{Path: "dirln", Recursive: true}, // removes the link, not the tree behind it
		{Path: "empty"},
		{Path: "tree", Recursive: true},
	} {
		if _, err := s.Remove(bg, req); err != nil {
			t.Fatalf("Remove(%v): %v", req, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, req.Path)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists (%v)", req.Path, err)
		}
		if req.Path == "dirln" {
			if _, err := os.Stat(filepath.Join(dir, "tree/a/b")); err != nil {
				t.Errorf("removing a symlink to a dir removed its content: %v", err)
			}
		}
	}
	if got := mustRead(t, filepath.Join(dir, "target")); got != "keep" {
		t.Errorf("symlink target changed: %q", got)
	}

	_, err = s.Remove(bg, &agentpb.FsRemoveRequest{Path: "f"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "")
}
