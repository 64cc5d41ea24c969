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

func TestMkdir(t *testing.T) {
	s, dir := newService(t)
	mustWrite(t, filepath.Join(dir, "file"), "", 0o644)
	mustMkdir := func(req *agentpb.FsMkdirRequest) {
		t.Helper()
		if _, err := s.Mkdir(bg, req); err != nil {
			t.Fatalf("Mkdir(%v): %v", req, err)
		}
	}
	mustMkdir(&agentpb.FsMkdirRequest{Path: "a/b/c", Parents: true})
	if fi, err := os.Stat(filepath.Join(dir, "a/b/c")); err != nil || !fi.IsDir() {
		t.Fatalf("a/b/c not created: %v", err)
	}
	mustMkdir(&agentpb.FsMkdirRequest{Path: "a/b/c", Parents: true}) // existing is fine with parents
	mustMkdir(&agentpb.FsMkdirRequest{Path: "single"})

	// mode is set exactly, not filtered by the umask.
	mustMkdir(&agentpb.FsMkdirRequest{Path: "open", Mode: 0o777})
	mustMkdir(&agentpb.FsMkdirRequest{Path: "p/q", Parents: true, Mode: 0o1750})
	for path, want := range map[string]os.FileMode{"open": 0o777, "p/q": 0o750 | os.ModeSticky} {
		fi, _ := os.Stat(filepath.Join(dir, path))
		if got := fi.Mode() & (os.ModePerm | os.ModeSticky); got != want {
			t.Errorf("%s mode %v, want %v", path, got, want)
		}
	}

	errTests := []struct {
		name  string
		req   *agentpb.FsMkdirRequest
		code  agentpb.ErrorCode
		errno string
	}{
		{"exists", &agentpb.FsMkdirRequest{Path: "single"}, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.EEXIST))},
		{"missing parent", &agentpb.FsMkdirRequest{Path: "x/y"}, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, ""},
		{"parents over a file", &agentpb.FsMkdirRequest{Path: "file/y", Parents: true}, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(syscall.ENOTDIR))},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Mkdir(bg, tt.req)
			wantCode(t, err, tt.code, tt.errno)
		})
	}
}
