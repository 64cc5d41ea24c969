package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// writeMain writes a main package printing its -X stamped variable.
func writeMain(t *testing.T) string {
	src := filepath.Join(t.TempDir(), "hello.go")
	code := "package main\n\nimport \"fmt\"\n\nvar word = \"unset\"\n\nfunc main() { fmt.Print(word) }\n"
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

func TestEachBuildOnce(t *testing.T) {
	src := writeMain(t)
	a := Command(t, src, "-X main.word=a")
	st, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	if again := Command(t, src, "-X main.word=a"); again != a {
		t.Fatalf("second call built again: %s then %s", a, again)
	}
	if st2, _ := os.Stat(a); !st2.ModTime().Equal(st.ModTime()) {
		t.Fatal("the binary was rewritten")
	}
	b := Command(t, src, "-X main.word=b")
	if b == a {
		t.Fatal("other link flags share a binary")
	}
	for bin, want := range map[string]string{a: "a", b: "b"} {
		out, err := exec.Command(bin).Output()
		if err != nil || string(out) != want {
			t.Fatalf("%s printed %q (%v), want %q", bin, out, err, want)
		}
	}
}

func TestBuildErrorSaysWhat(t *testing.T) {
	src := filepath.Join(t.TempDir(), "broken.go")
	os.WriteFile(src, []byte("package main\n\nfunc main() { undefined() }\n"), 0o644)
	_, err := Build(src, "")
	if err == nil || !strings.Contains(err.Error(), "undefined") {
		t.Fatalf("err = %v", err)
	}
	// the failure is remembered, not retried
	if _, err2 := Build(src, ""); err2 == nil || err2.Error() != err.Error() {
		t.Fatalf("second err = %v", err2)
	}
}
