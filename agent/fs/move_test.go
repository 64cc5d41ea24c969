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
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestMove(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "src"), "src", 0o644)
	mustWrite(t, filepath.Join(dir, "dst"), "dst", 0o644)

	_, err := s.Move(bg, &agentpb.FsMoveRequest{From: "src", To: "dst"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.EEXIST)))
	if mustRead(t, filepath.Join(dir, "dst")) != "dst" || mustRead(t, filepath.Join(dir, "src")) != "src" {
		t.Fatal("a refused move changed a file")
	}

	if _, err := s.Move(bg, &agentpb.FsMoveRequest{From: "src", To: "dst", Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(dir, "dst")); got != "src" {
		t.Errorf("dst = %q, want src", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "src")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("src still there: %v", err)
	}

	// Missing source is NOT_FOUND, even when the destination exists.
	_, err = s.Move(bg, &agentpb.FsMoveRequest{From: "src", To: "dst"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "")

	// Directories move, and a fresh name needs no overwrite.
	mustWrite(t, filepath.Join(dir, "d1/inner"), "in", 0o644)
	if _, err := s.Move(bg, &agentpb.FsMoveRequest{From: "d1", To: "d2"}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(dir, "d2/inner")); got != "in" {
		t.Errorf("d2/inner = %q", got)
	}
	// Overwrite replaces an empty directory (POSIX rename) but not a full one.
	if err := os.Mkdir(filepath.Join(dir, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Move(bg, &agentpb.FsMoveRequest{From: "d2", To: "emptydir", Overwrite: true}); err != nil {
		t.Fatalf("move over an empty dir: %v", err)
	}
	mustWrite(t, filepath.Join(dir, "full/x"), "", 0o644)
	_, err = s.Move(bg, &agentpb.FsMoveRequest{From: "emptydir", To: "full", Overwrite: true})
	if pe := wantOSErr(t, err); pe != strconv.Itoa(int(syscall.ENOTEMPTY)) && pe != strconv.Itoa(int(syscall.EEXIST)) {
		t.Errorf("errno %s, want ENOTEMPTY or EEXIST", pe)
	}
}

// moveAcross is what an EXDEV rename falls back to; run it directly, since
// a second filesystem is not always at hand.
func TestMoveAcrossCopiesFileAndSymlink(t *testing.T) {
	_, dir := newService(t)
	src := filepath.Join(dir, "src")
	mustWrite(t, src, "payload", 0o751)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(src, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Lstat(src)
	mustWrite(t, filepath.Join(dir, "taken"), "keep", 0o644)
	if err := moveAcross(src, filepath.Join(dir, "taken"), fi, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("no-overwrite onto an existing file: %v, want EEXIST", err)
	}
	assertNoTempFiles(t, dir)
	if err := moveAcross(src, filepath.Join(dir, "dst"), fi, false); err != nil {
		t.Fatal(err)
	}
	got, err := os.Stat(filepath.Join(dir, "dst"))
	if err != nil || got.Mode().Perm() != 0o751 || !got.ModTime().Equal(mtime) {
		t.Errorf("dst %v mtime %v (%v); want mode and mtime kept", got.Mode(), got.ModTime(), err)
	}
	if mustRead(t, filepath.Join(dir, "dst")) != "payload" {
		t.Error("content not copied")
	}
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("source not removed: %v", err)
	}

	ln := filepath.Join(dir, "ln")
	if err := os.Symlink("dst", ln); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Lstat(ln)
	if err := moveAcross(ln, filepath.Join(dir, "ln2"), fi, false); err != nil {
		t.Fatal(err)
	}
	if dest, err := os.Readlink(filepath.Join(dir, "ln2")); err != nil || dest != "dst" {
		t.Errorf("ln2 -> %q (%v), want a symlink to dst", dest, err)
	}
}

// A real cross-device move, when /dev/shm is another filesystem.
func TestMoveCrossDevice(t *testing.T) {
	s, dir := newService(t)
	other, err := os.MkdirTemp("/dev/shm", "og-move-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat(other, &b) != nil || a.Dev == b.Dev {
		t.Skip("temp dir and /dev/shm are the same filesystem")
	}
	mustWrite(t, filepath.Join(other, "f"), "across", 0o644)
	if _, err := s.Move(bg, &agentpb.FsMoveRequest{From: filepath.Join(other, "f"), To: "f"}); err != nil {
		t.Fatal(err)
	}
	if mustRead(t, filepath.Join(dir, "f")) != "across" {
		t.Error("content not moved")
	}
	if err := os.Mkdir(filepath.Join(other, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = s.Move(bg, &agentpb.FsMoveRequest{From: filepath.Join(other, "d"), To: "d"})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.EXDEV)))
}

func wantOSErr(t *testing.T, err error) string {
	t.Helper()
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, "")
	return agenterr.ToProto(err).Detail["errno"]
}
