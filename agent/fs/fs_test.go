package fs

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// newService returns a Service rooted at a fresh temp dir (symlinks
// resolved, so paths compare equal on macOS) with ~ at root/home.
func newService(t testing.TB) (*Service, string) {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(workspace.Root{Dir: dir, Home: filepath.Join(dir, "home")}), dir
}

func mustWrite(t testing.TB, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // independent of the umask
		t.Fatal(err)
	}
}

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantCode asserts err maps to code, and to errno when it is not "".
func wantCode(t *testing.T, err error, code agentpb.ErrorCode, errno string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want %v", code)
	}
	pe := agenterr.ToProto(err)
	if pe.Code != code {
		t.Fatalf("code = %v (%s), want %v", pe.Code, pe.Message, code)
	}
	if errno != "" && pe.Detail["errno"] != errno {
		t.Fatalf("errno = %q (%s), want %q", pe.Detail["errno"], pe.Message, errno)
	}
}

func skipIfRoot(t *testing.T) {
	t.Helper()
	if isRoot() {
		t.Skip("running as root: permission bits do not stop root, so EACCES cannot be provoked")
	}
}

var bg = context.Background()
