package git

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/gittest"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// TestOutputFitsReplyBudget: a git answer larger than the reply can carry
// comes back cut to the budget with one marker per cut stream, on both
// backends, instead of a reply the transport refuses (PAYLOAD_TOO_LARGE).
// Before the fix each stream kept up to 64 MiB whatever the budget.
func TestOutputFitsReplyBudget(t *testing.T) {
	sb := gittest.New(t, testHome)
	repo := gittest.History(sb)
	for i := range 40 {
		sb.Git(repo, "commit", "-q", "--allow-empty", "-m", fmt.Sprintf("filler commit %d with a longer subject line", i))
	}
	for i := range 600 {
		if err := os.WriteFile(sb.Path(fmt.Sprintf("%s/u%03d", repo, i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	markerRe := regexp.MustCompile(`\n\[opengeni-agent: (stdout|stderr) truncated: kept (\d+) of (\d+) bytes\]\n`)
	const maxReply = 4096
	for _, backend := range []struct {
		name string
		svc  *Service
	}{{"cli", cliService(sb)}, {"go-git", goGitService(sb)}} {
		for _, op := range []agentpb.GitOp{agentpb.GitOp_GIT_OP_LOG, agentpb.GitOp_GIT_OP_STATUS} {
			t.Run(backend.name+"/"+opName(op), func(t *testing.T) {
				full := run(t, backend.svc, op, repo)
				ctx := opctx.WithMaxReply(context.Background(), maxReply)
				resp, err := backend.svc.Git(ctx, &agentpb.GitRequest{Op: op, Cwd: repo})
				if err != nil {
					t.Fatal(err)
				}
				if n, budget := proto.Size(resp), opctx.PayloadBudget(ctx); n > budget {
					t.Fatalf("reply is %d bytes, over the budget %d", n, budget)
				}
				if len(full.Stdout) <= maxReply || string(full.Stdout[:len(resp.Stdout)]) != string(resp.Stdout) {
					t.Fatalf("stdout %d bytes is not a head of the full %d", len(resp.Stdout), len(full.Stdout))
				}
				m := markerRe.FindAllStringSubmatch(string(resp.Stderr), -1)
				if len(m) != 1 || m[0][1] != "stdout" || m[0][2] != strconv.Itoa(len(resp.Stdout)) || m[0][3] != strconv.Itoa(len(full.Stdout)) {
					t.Fatalf("markers %q, want one saying stdout kept %d of %d", m, len(resp.Stdout), len(full.Stdout))
				}
				if op == agentpb.GitOp_GIT_OP_STATUS && (resp.Status != nil || full.Status == nil) {
					t.Errorf("status: cut reply carries %v, full reply %v; want none for a cut listing", resp.Status != nil, full.Status != nil)
				}
			})
		}
	}
}
