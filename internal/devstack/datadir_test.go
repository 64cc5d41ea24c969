package devstack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Every file of `relay dev -data-dir X` lives in X (issue 10: viewer.secret
// went to the user cache dir regardless), and the dev relay has revocation
// on: revoking the local machine closes its terminal's relay channel.
func TestDevStackFilesInDataDirAndRelayRevocation(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a unix shell")
	}
	cache, home, cfg := t.TempDir(), t.TempDir(), t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", home)
	t.Setenv(EnvDevData, "")
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := Start(ctx, Options{NATSPort: -1, RelayPort: -1, APIPort: -1, DataDir: dataDir, WorkspaceRoot: t.TempDir(),
		Out: io.Discard, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if got := filepath.Dir(st.SecretFile()); got != dataDir {
		t.Fatalf("viewer secret in %s, want the data dir %s", got, dataDir)
	}
	url, secret, err := ReadDevFiles(dataDir)
	if err != nil || url != st.RelayURL() || !bytes.Equal(secret, st.StreamSecret()) {
		t.Fatalf("dev files: %q %v", url, err)
	}
	nothingUnder := func(when string) {
		t.Helper()
		for _, d := range []string{cache, home, cfg} {
			filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
				if err == nil && p != d {
					t.Errorf("%s: %s written outside the data dir", when, p)
				}
				return nil
			})
		}
	}
	nothingUnder("running")

	rpc := control.NewNATSRPC(st.Platform().ControlConnFactory())
	defer rpc.Close()
	sess, err := control.NewSession(control.SessionConfig{WorkspaceID: st.WorkspaceID(), AgentID: st.AgentID(), RPC: rpc,
		Relay: control.ParseRelayURL(url)})
	if err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	defer ocancel()
	for !sess.Ping(octx) {
		if octx.Err() != nil {
			t.Fatal("agent never answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	term, err := sess.OpenTerminal(octx, control.TerminalOptions{
		PtyOptions: control.PtyOptions{Command: []string{"/bin/sh"}}, StreamSecret: secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := term.Send(octx, []byte("echo live-$((40+2))\r")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for b := range term.Output() {
		if out.Write(b); bytes.Contains(out.Bytes(), []byte("live-42")) {
			break
		}
	}
	if ok, err := st.Platform().RevokeEnrollment(octx, st.AgentID()); !ok || err != nil {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	// Synchronise on the relay's close: the output ends with FENCED.
	ended := make(chan struct{})
	go func() {
		for range term.Output() {
		}
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(20 * time.Second): // the failure deadline, not a wait
		t.Fatal("the revoked machine's terminal channel is still open")
	}
	var closed *control.StreamClosedError
	if err := term.Stream.Err(); !errors.As(err, &closed) || closed.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED ||
		closed.Message != "machine enrollment revoked" {
		t.Fatalf("terminal ended with %v, want the relay's revocation close", err)
	}

	cancel()
	if err := st.Wait(); err != nil {
		t.Fatal(err)
	}
	nothingUnder("stopped")
}
