//go:build unix

package fs

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// returns runs op and fails the test if it has not returned within a bound
// far beyond any honest answer: the failure mode under test is a hang.
func returns[T any](t *testing.T, op func() (T, error)) (T, error) {
	t.Helper()
	type outcome struct {
		v   T
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		v, err := op()
		done <- outcome{v, err}
	}()
	select {
	case o := <-done:
		return o.v, o.err
	case <-time.After(10 * time.Second):
		t.Fatal("the op never returned")
		panic("unreachable")
	}
}

// TestSpecialFilesAreTypedNeverHang: reading or writing a FIFO (no process
// on the other end) or a socket file answers UNSUPPORTED naming the file
// type, at once. Before the fix an append to a FIFO blocked in open forever
// (holding a heavy-op slot) and the other cases answered OS.
func TestSpecialFilesAreTypedNeverHang(t *testing.T) {
	s, dir := newService(t)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	ops := []struct {
		name string
		do   func(p string) error
	}{
		{"append", func(p string) error {
			_, err := s.Write(bg, &agentpb.FsWriteRequest{Path: p, Content: []byte("x"), Append: true})
			return err
		}},
		{"replace", func(p string) error {
			_, err := s.Write(bg, &agentpb.FsWriteRequest{Path: p, Content: []byte("x")})
			return err
		}},
		{"read", func(p string) error {
			_, err := s.Read(bg, &agentpb.FsReadRequest{Path: p})
			return err
		}},
	}
	for _, file := range []struct{ path, kind string }{{fifo, "named pipe"}, {sock, "socket"}} {
		for _, op := range ops {
			t.Run(file.kind+"/"+op.name, func(t *testing.T) {
				_, err := returns(t, func() (struct{}, error) { return struct{}{}, op.do(file.path) })
				wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, "")
				if msg := agenterr.ToProto(err).Message; !strings.Contains(msg, file.kind) || !strings.Contains(msg, file.path) {
					t.Errorf("message %q should name the path and say it is a %s", msg, file.kind)
				}
			})
		}
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v %v", fi.Mode(), err)
	}
}

// TestReadDeviceDoesNotBlock: a device with nothing to read now (a pty
// master nobody writes to) gives what it has, nothing, instead of waiting.
// Before the fix the read blocked forever.
func TestReadDeviceDoesNotBlock(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	s, _ := newService(t)
	resp, err := returns(t, func() (*agentpb.FsReadResponse, error) {
		return s.Read(bg, &agentpb.FsReadRequest{Path: "/dev/ptmx"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Content) != 0 || resp.TotalSize != 0 {
		t.Errorf("content %q total %d, want nothing", resp.Content, resp.TotalSize)
	}
}

// TestWriteCannotReplaceAtomically: an existing file whose directory takes
// no temp file is written in place, never answered NOT_FOUND.
func TestWriteCannotReplaceAtomically(t *testing.T) {
	t.Run("procfs", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("needs /proc")
		}
		// /proc/self/comm is the test process's own name: writable, in a
		// directory where nothing can be created (ENOENT), even as root.
		p := "/proc/self/comm"
		old, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(p, old, 0) })
		s, _ := newService(t)
		if _, err := s.Write(bg, &agentpb.FsWriteRequest{Path: p, Content: []byte("og-fs-test")}); err != nil {
			t.Fatalf("write %s: %v (code %v)", p, err, agenterr.ToProto(err).Code)
		}
		if got := mustRead(t, p); got != "og-fs-test\n" {
			t.Errorf("%s = %q after the write", p, got)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root creates files in a read-only directory: permission bits do not bind (the procfs case covers root)")
		}
		s, dir := newService(t)
		ro := filepath.Join(dir, "ro")
		mustWrite(t, filepath.Join(ro, "f"), "old content", 0o644)
		if err := os.Chmod(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(ro, 0o755) })
		if _, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "ro/f", Content: []byte("new")}); err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, filepath.Join(ro, "f")); got != "new" {
			t.Errorf("content %q, want new", got)
		}
		// A new file there is refused with the errno, not NOT_FOUND.
		_, err := s.Write(bg, &agentpb.FsWriteRequest{Path: "ro/g", Content: []byte("x")})
		wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.EACCES)))
	})
}

// TestListFIFOIsNotADirectory: listing a FIFO is ENOTDIR like any file.
// (os.ReadDir opens with O_DIRECTORY; this guards it.)
func TestListFIFOIsNotADirectory(t *testing.T) {
	s, dir := newService(t)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := returns(t, func() (*agentpb.FsListResponse, error) {
		return s.List(bg, &agentpb.FsListRequest{Path: fifo})
	})
	wantCode(t, err, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.ENOTDIR)))
}

// TestOpsPastTheirDeadline: an op whose deadline passed (while it waited
// for a slot) answers TIMEOUT and changes nothing.
func TestOpsPastTheirDeadline(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "f"), "old", 0o644)
	ctx, cancel := context.WithDeadline(bg, time.Now().Add(-time.Second))
	defer cancel()
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"read", func() error { _, err := s.Read(ctx, &agentpb.FsReadRequest{Path: "f"}); return err }},
		{"replace", func() error {
			_, err := s.Write(ctx, &agentpb.FsWriteRequest{Path: "f", Content: []byte("new")})
			return err
		}},
		{"append", func() error {
			_, err := s.Write(ctx, &agentpb.FsWriteRequest{Path: "f", Content: []byte("new"), Append: true})
			return err
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			err := op.do()
			if pe := agenterr.ToProto(err); pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_TIMEOUT || !pe.GetRetryable() {
				t.Fatalf("err = %v, want a retryable TIMEOUT", err)
			}
			if got := mustRead(t, filepath.Join(dir, "f")); got != "old" {
				t.Errorf("content %q, want it untouched", got)
			}
		})
	}
	assertNoTempFiles(t, dir)
}
