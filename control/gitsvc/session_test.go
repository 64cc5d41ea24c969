package gitsvc

import (
	"reflect"
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// TestGitOpFor: the commands this package runs, expressed as the agent's
// git op for a machine without a git binary.
func TestGitOpFor(t *testing.T) {
	tests := []struct {
		args []string
		want gitOpCall
	}{
		{[]string{"rev-parse", "--is-inside-work-tree"}, gitOpCall{op: agentpb.GitOp_GIT_OP_BRANCH, args: []string{"--show-current"}, insideWorkTree: true}},
		{statusArgs, gitOpCall{op: agentpb.GitOp_GIT_OP_STATUS, args: []string{"-z"}}},
		{[]string{"diff", "--no-color", "--cached"}, gitOpCall{op: agentpb.GitOp_GIT_OP_DIFF, args: []string{"--no-color", "--cached"}}},
		{[]string{"log", "-n5"}, gitOpCall{op: agentpb.GitOp_GIT_OP_LOG, args: []string{"-n5"}}},
		{[]string{"-c", "core.quotePath=false", "diff"}, gitOpCall{op: agentpb.GitOp_GIT_OP_RAW, args: []string{"-c", "core.quotePath=false", "diff"}}},
		{[]string{"cat-file", "blob", "HEAD:a"}, gitOpCall{op: agentpb.GitOp_GIT_OP_RAW, args: []string{"cat-file", "blob", "HEAD:a"}}},
		{[]string{"rev-parse", "HEAD"}, gitOpCall{op: agentpb.GitOp_GIT_OP_RAW, args: []string{"rev-parse", "HEAD"}}},
		{nil, gitOpCall{op: agentpb.GitOp_GIT_OP_RAW}},
	}
	for _, tt := range tests {
		if got := gitOpFor(tt.args); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("gitOpFor(%q) = %+v, want %+v", tt.args, got, tt.want)
		}
	}
}
