package git

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/gittest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Run `go test ./agent/git -run TestPorcelainGolden -update` to recapture
// testdata/porcelain from real git and rewrite the expected parses.
var update = flag.Bool("update", false, "recapture testdata from real git and rewrite golden parses")

var porcelainCaptures = []struct {
	name     string
	scenario func(*gittest.Sandbox) string
	cwd      string
	args     []string
}{
	{"ahead-behind", gittest.AheadBehind, "", nil},
	{"rename-ignored", gittest.Rename, "", []string{"--ignored"}},
	{"conflict", gittest.Conflict, "", nil},
	{"detached", gittest.Detached, "", nil},
	{"empty", gittest.Empty, "", nil},
	{"unicode", gittest.Unicode, "", nil},
	{"unicode-subdir", gittest.Unicode, "dir with space", nil},
	{"unicode-z", gittest.Unicode, "", []string{"-z"}},
	{"submodule", gittest.Submodule, "", nil},
	{"clean", scenarioClean, "", nil},
}

func TestPorcelainGolden(t *testing.T) {
	for _, c := range porcelainCaptures {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join("testdata", "porcelain", c.name+".txt")
			want := filepath.Join("testdata", "porcelain", c.name+".golden")
			if *update {
				sb := gittest.New(t, testHome)
				repo := c.scenario(sb)
				args := append([]string{"status", "--porcelain=v2", "--branch"}, c.args...)
				out, err := sb.Cmd(filepath.Join(sb.Path(repo), c.cwd), "git", args...).Output()
				if err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(filepath.Dir(in), 0o755)
				if err := os.WriteFile(in, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := os.ReadFile(in)
			if err != nil {
				t.Fatalf("read testdata (run with -update): %v", err)
			}
			got := parsePorcelainV2(out)
			if *update {
				b, _ := prototext.MarshalOptions{Multiline: true}.Marshal(got)
				if err := os.WriteFile(want, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			b, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			exp := &agentpb.GitStatus{}
			if err := prototext.Unmarshal(b, exp); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, exp) {
				t.Errorf("parse of %s:\n%s\nwant:\n%s", in, prototext.Format(got), b)
			}
		})
	}
}

func TestParsePorcelainLines(t *testing.T) {
	tests := []struct {
		name, in string
		want     *agentpb.GitStatus
	}{
		{"empty output", "", &agentpb.GitStatus{Clean: true}},
		{"bad ab counts", "# branch.head main\n# branch.ab +x -y\n", &agentpb.GitStatus{Branch: "main", Clean: true}},
		{"crlf", "# branch.head main\r\n? a b.txt\r\n", &agentpb.GitStatus{Branch: "main", Files: []*agentpb.GitFileStatus{{Path: "a b.txt", Code: "??"}}}},
		{"quoted rename", "2 R. N... 100644 100644 100644 aa aa R100 \"new\\tname\"\t\"old \\303\\274\"\n",
			&agentpb.GitStatus{Files: []*agentpb.GitFileStatus{{Path: "new\tname", Code: "R ", Staged: true}}}},
		{"typechange and copy", "1 T. N... 100644 120000 120000 aa bb link\n2 C. N... 100644 100644 100644 aa aa C75 copy\tsrc\n",
			&agentpb.GitStatus{Files: []*agentpb.GitFileStatus{{Path: "link", Code: "T ", Staged: true}, {Path: "copy", Code: "C ", Staged: true}}}},
		{"ignored only", "! build/\n", &agentpb.GitStatus{Clean: true, Files: []*agentpb.GitFileStatus{{Path: "build/", Code: "!!"}}}},
		{"short line", "1 .M\n", &agentpb.GitStatus{}},
	}
	for _, tt := range tests {
		if got := parsePorcelainV2([]byte(tt.in)); !proto.Equal(got, tt.want) {
			t.Errorf("%s: got %s want %s", tt.name, prototext.Format(got), prototext.Format(tt.want))
		}
	}
}

func TestQuoteRoundTrip(t *testing.T) {
	for _, p := range []string{"plain.txt", "a b", "ü.txt", "tab\there", "q\"uote", `back\slash`, "nl\nx", "\x7f"} {
		if got := unquoteC(quoteC(p)); got != p {
			t.Errorf("unquoteC(quoteC(%q)) = %q (quoted %s)", p, got, quoteC(p))
		}
	}
	if quoteC("ü") != `"\303\274"` {
		t.Errorf("quoteC(ü) = %s", quoteC("ü"))
	}
}
