package git

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const (
	benchFiles    = 10000
	benchModified = 100
)

var (
	benchOnce sync.Once
	benchDir  string
	benchErr  error
)

// benchRepo generates, once per process, a repository with 10,000 tracked
// files (100 directories of 100) of which 100 are modified.
func benchRepo(b *testing.B) string {
	b.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		b.Skip("git is not installed")
	}
	benchOnce.Do(func() {
		dir := filepath.Join(testHome, "bench-repo")
		git := func(args ...string) error {
			cmd := exec.Command("git", args...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("git %v: %v\n%s", args, err, out)
			}
			return nil
		}
		if benchErr = os.MkdirAll(dir, 0o755); benchErr != nil {
			return
		}
		if benchErr = git("init", "-q"); benchErr != nil {
			return
		}
		for i := range benchFiles {
			p := filepath.Join(dir, fmt.Sprintf("pkg%03d", i/100), fmt.Sprintf("file%05d.txt", i))
			if i%100 == 0 {
				if benchErr = os.MkdirAll(filepath.Dir(p), 0o755); benchErr != nil {
					return
				}
			}
			if benchErr = os.WriteFile(p, fmt.Appendf(nil, "file %d\nsome content\n", i), 0o644); benchErr != nil {
				return
			}
		}
		if benchErr = git("add", "-A"); benchErr != nil {
			return
		}
		if benchErr = git("commit", "-qm", "generated"); benchErr != nil {
			return
		}
		for i := 0; i < benchModified; i++ {
			n := i * (benchFiles / benchModified)
			p := filepath.Join(dir, fmt.Sprintf("pkg%03d", n/100), fmt.Sprintf("file%05d.txt", n))
			if benchErr = os.WriteFile(p, fmt.Appendf(nil, "file %d\nmodified\n", n), 0o644); benchErr != nil {
				return
			}
		}
		benchErr = git("status", "--porcelain=v2") // settle the index's stat data
		benchDir = dir
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDir
}

func benchService(b *testing.B, svc *Service, dir string) {
	req := &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_STATUS, Cwd: dir}
	b.ResetTimer()
	for b.Loop() {
		resp, err := svc.Git(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(resp.Status.GetFiles()); n != benchModified {
			b.Fatalf("%d files in status, want %d", n, benchModified)
		}
	}
}

// BenchmarkStatusCLI: the agent's default path, the git binary.
func BenchmarkStatusCLI(b *testing.B) {
	dir := benchRepo(b)
	benchService(b, New(Options{Root: workspace.Root{Dir: dir}}), dir)
}

// BenchmarkStatusGoGit: the agent without a git binary.
func BenchmarkStatusGoGit(b *testing.B) {
	dir := benchRepo(b)
	benchService(b, New(Options{Root: workspace.Root{Dir: dir}, GitPath: filepath.Join(dir, "no-git")}), dir)
}

// BenchmarkStatusDirectCLI: the baseline, git run directly.
func BenchmarkStatusDirectCLI(b *testing.B) {
	dir := benchRepo(b)
	b.ResetTimer()
	for b.Loop() {
		cmd := exec.Command("git", "status", "--porcelain=v2", "--branch")
		cmd.Dir = dir
		if _, err := cmd.Output(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatusCLIOverhead alternates the agent's CLI path and the direct
// git run in one loop, so machine load hits both alike, and reports their
// medians and ratio (the target: at most 1.1).
func BenchmarkStatusCLIOverhead(b *testing.B) {
	dir := benchRepo(b)
	svc := New(Options{Root: workspace.Root{Dir: dir}})
	req := &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_STATUS, Cwd: dir}
	var agent, direct []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := svc.Git(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		cmd := exec.Command("git", "status", "--porcelain=v2", "--branch")
		cmd.Dir = dir
		if _, err := cmd.Output(); err != nil {
			b.Fatal(err)
		}
		agent, direct = append(agent, t1.Sub(t0)), append(direct, time.Since(t1))
	}
	median := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	ma, md := median(agent), median(direct)
	b.ReportMetric(float64(ma.Nanoseconds()), "agent-ns/op")
	b.ReportMetric(float64(md.Nanoseconds()), "direct-ns/op")
	b.ReportMetric(float64(ma)/float64(md), "ratio")
}
