//go:build !windows

package git

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/gittest"
	"github.com/opengeni/opengeni-agent/internal/testutil"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// TestTimeoutKillsProcessGroup: an ssh that hangs (as one waiting for a
// password would) is stopped at the timeout, and so is everything git
// started: the fake ssh is a grandchild of git.
func TestTimeoutKillsProcessGroup(t *testing.T) {
	sb := gittest.New(t, testHome)
	pidFile := filepath.Join(sb.Dir, "ssh.pid")
	script := filepath.Join(sb.Dir, "hang-ssh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+pidFile+"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_SSH_COMMAND", script)
	svc := New(Options{Root: workspace.Root{Dir: sb.Dir}, Timeout: time.Second})
	start := time.Now()
	_, err := svc.Git(context.Background(), &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_RAW, Args: []string{"ls-remote", "ssh://git@example.invalid/repo.git"}})
	if !errors.Is(err, agenterr.ErrTimeout) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if ae := agenterr.ToProto(err); ae.Code != agentpb.ErrorCode_ERROR_CODE_TIMEOUT || !ae.Retryable {
		t.Fatalf("wire error = %v", ae)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("fake ssh never ran: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	testutil.EventuallyTrue(t, 3*time.Second, fmt.Sprintf("the hanging ssh (pid %d) to be gone after the timeout", pid),
		func() bool { return syscall.Kill(pid, 0) != nil })
}
