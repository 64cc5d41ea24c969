//go:build unix

package exec

import (
	"context"
	"log/slog"
	osexec "os/exec"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BenchmarkExecTrue is the agent's overhead per exec over BenchmarkForkExecTrue.
func BenchmarkExecTrue(b *testing.B) {
	s := New(Options{Root: workspace.Root{Dir: b.TempDir()}, Logger: slog.New(slog.DiscardHandler)})
	req := &agentpb.ExecRequest{Command: []string{"true"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := s.Exec(ctx, req)
		if err != nil || resp.ExitCode != 0 {
			b.Fatal(resp, err)
		}
	}
}

func BenchmarkForkExecTrue(b *testing.B) {
	path, err := osexec.LookPath("true")
	if err != nil {
		b.Skip(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := osexec.Command(path).Run(); err != nil {
			b.Fatal(err)
		}
	}
}
