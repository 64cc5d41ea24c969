//go:build unix

package fs

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestWriteReadRoundtripWithParents(t *testing.T) {
	s, dir := newService(t)
	content := []byte("hello\x00binary\xff")
	resp, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "sub/dir/file.txt", Content: content, CreateParents: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.BytesWritten != uint64(len(content)) {
		t.Errorf("bytes_written = %d, want %d", resp.BytesWritten, len(content))
	}
	r, err := s.Read(bg, &agentpb.FsReadRequest{Path: "sub/dir/file.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Content) != string(content) || r.TotalSize != uint64(len(content)) {
		t.Errorf("read %q total %d", r.Content, r.TotalSize)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sub/dir/file.txt")); err != nil || fi.Mode().Perm() != 0o644&^umask() {
		t.Errorf("new file mode %v, %v; want 0644 less umask", fi.Mode(), err)
	}
	assertNoTempFiles(t, filepath.Join(dir, "sub/dir"))
}

func TestWriteMissingParentIsNotFound(t *testing.T) {
	s, _ := newService(t)
	_, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "no/such/file", Content: []byte("x")})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "")
}

func TestWriteAppend(t *testing.T) {
	s, dir := newService(t)
	for _, part := range []string{"a", "b", "c"} {
		if _, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "log", Content: []byte(part), Append: true, Mode: 0o600}); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustRead(t, filepath.Join(dir, "log")); got != "abc" {
		t.Errorf("content %q, want abc", got)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "log")); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the creation mode 0600", fi.Mode())
	}
}

func TestWriteReplaceIsAtomicAndKeepsMode(t *testing.T) {
	s, dir := newService(t)
	p := filepath.Join(dir, "script.sh")
	mustWrite(t, p, "old content that is longer", 0o751)
	before := inode(t, p)
	if _, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "script.sh", Content: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p); got != "new" {
		t.Errorf("content %q", got)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o751 {
		t.Errorf("mode %v, want the old 0751 kept", fi.Mode())
	}
	if inode(t, p) == before {
		t.Error("same inode: the file was rewritten in place, not replaced by rename")
	}
	assertNoTempFiles(t, dir)

	// An explicit mode applies to the replacement.
	if _, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "script.sh", Content: []byte("x"), Mode: 0o700}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o700&^umask() {
		t.Errorf("mode %v, want 0700 less umask", fi.Mode())
	}
}

func TestWriteThroughSymlink(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "real", "target.txt"), "old", 0o640)
	if err := os.Symlink("real/target.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "real", "created.txt"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"link": "real/target.txt", "dangling": "real/created.txt"} {
		if _, err := s.Write(bg, &agentpb.FsWriteRequest{Path: link, Content: []byte("via " + link)}); err != nil {
			t.Fatalf("%s: %v", link, err)
		}
		if fi, err := os.Lstat(filepath.Join(dir, link)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is no longer a symlink: %v %v", link, fi.Mode(), err)
		}
		if got := mustRead(t, filepath.Join(dir, target)); got != "via "+link {
			t.Errorf("%s content %q", target, got)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "real", "target.txt")); fi.Mode().Perm() != 0o640 {
		t.Errorf("target mode %v, want 0640 kept", fi.Mode())
	}
}

func TestWriteErrors(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "file"), "x", 0o644)
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("directory", func(t *testing.T) {
		_, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "d", Content: []byte("x")})
		wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.EISDIR)))
	})
	t.Run("under a file", func(t *testing.T) {
		_, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "file/x", Content: []byte("x"), CreateParents: true})
		wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.ENOTDIR)))
	})
	t.Run("read-only file", func(t *testing.T) {
		skipIfRoot(t)
		mustWrite(t, filepath.Join(dir, "ro"), "keep", 0o444)
		_, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "ro", Content: []byte("x")})
		wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.EACCES)))
		if got := mustRead(t, filepath.Join(dir, "ro")); got != "keep" {
			t.Errorf("read-only file was replaced: %q", got)
		}
	})
}

// A device is written in place, never replaced by a regular file.
func TestWriteDeviceInPlace(t *testing.T) {
	s, _ := newService(t)
	if _, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "/dev/null", Content: []byte("discard")}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat("/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a device: %v %v", fi.Mode(), err)
	}
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Ino)
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".opengeni-") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}
