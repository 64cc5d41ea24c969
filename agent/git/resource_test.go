package git

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/gittest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// go-git runs inside the agent, so no leaf can hold it: a request's policy
// is refused UNSUPPORTED, while the owner's caps alone (which limit the
// processes the agent starts; go-git starts none) let it run.
func TestGoGitUnderAResourcePolicy(t *testing.T) {
	sb := gittest.New(t, testHome)
	svc := goGitService(sb)
	limits := cgroup.NewAt(nil, cgroup.Policy{MemoryMax: 1 << 30}, cgroup.Support{Memory: true, Base: filepath.Join(t.TempDir(), "unused")})
	req := &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_STATUS}

	ctx, err := limits.Bind(context.Background(), "git", &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(64 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	var ae *agenterr.Error
	if _, err := svc.Git(ctx, req); !errors.As(err, &ae) || ae.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || ae.Detail["reason"] != cgroup.ReasonUnenforceable {
		t.Fatalf("go-git with a request policy: %v", err)
	}

	capsOnly, err := limits.Bind(context.Background(), "git", nil)
	if err != nil || cgroup.PolicyOf(capsOnly).MemoryMax != 1<<30 {
		t.Fatalf("caps not bound: %v", err)
	}
	// An empty sandbox is no repository: go-git ran and said so.
	if resp, err := svc.Git(capsOnly, req); err != nil || resp.GetExitCode() != 128 {
		t.Fatalf("go-git under the owner's caps only: %v %v", resp, err)
	}
}
