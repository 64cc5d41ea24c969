package workspace

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestResolve(t *testing.T) {
	r := Root{Dir: "/srv/ws", Home: "/home/u"}
	tests := []struct {
		in, want string
	}{
		{"", "/srv/ws"},
		{".", "/srv/ws"},
		{"a/b", "/srv/ws/a/b"},
		{"a/../b", "/srv/ws/b"},
		{"/tmp/x", "/tmp/x"},
		{"/tmp/x/", "/tmp/x"},
		{"~", "/home/u"},
		{"~/notes.md", "/home/u/notes.md"},
		{"~user/x", "/srv/ws/~user/x"}, // only the current user's ~ expands
		{"dir with space/ü.txt", "/srv/ws/dir with space/ü.txt"},
	}
	for _, tt := range tests {
		got, err := r.Resolve(tt.in)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", tt.in, err)
		}
		if got != filepath.FromSlash(tt.want) {
			t.Errorf("Resolve(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestResolveRejectsNUL(t *testing.T) {
	_, err := Root{Dir: "/srv"}.Resolve("a\x00b")
	var ae *agenterr.Error
	if !errors.As(err, &ae) || ae.Code != agentpb.ErrorCode_ERROR_CODE_OS {
		t.Fatalf("want an OS error, got %v", err)
	}
}

func FuzzResolve(f *testing.F) {
	for _, s := range []string{"", "~", "~/x", "/abs", "rel/../..", "a\x00", "//x", "~\x00"} {
		f.Add(s)
	}
	r := Root{Dir: "/srv/ws", Home: "/home/u"}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := r.Resolve(p)
		if err != nil {
			if !strings.Contains(p, "\x00") {
				t.Fatalf("Resolve(%q) failed: %v", p, err)
			}
			return
		}
		if !filepath.IsAbs(got) {
			t.Fatalf("Resolve(%q) = %q, not absolute", p, got)
		}
		if got != filepath.Clean(got) {
			t.Fatalf("Resolve(%q) = %q, not clean", p, got)
		}
		// A relative path that does not climb stays under the root.
		if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "~") && !strings.Contains(p, "..") && !strings.HasPrefix(got, "/srv/ws") {
			t.Fatalf("Resolve(%q) = %q escaped the root", p, got)
		}
	})
}
