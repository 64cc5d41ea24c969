package control

import (
	"context"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Git runs the agent's git op: the machine's own git (credential helpers,
// ssh config, hooks) with args passed verbatim, or go-git when the machine
// has no git binary. cwd is mapped like every path. GIT_OP_STATUS fills
// the structured status. A non-zero exit is a result, not an error.
func (s *Session) Git(ctx context.Context, op agentpb.GitOp, cwd string, args ...string) (*agentpb.GitResponse, error) {
	return invokeCase[*agentpb.ControlResponse_Git](ctx, s, "git", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_Git{Git: &agentpb.GitRequest{Op: op, Cwd: s.path(cwd), Args: args}}
	}, func(resp *agentpb.ControlResponse) *agentpb.GitResponse { return orEmpty(resp.GetGit()) })
}
