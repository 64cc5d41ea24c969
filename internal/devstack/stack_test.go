package devstack

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/control"
)

// `relay dev`'s stack serves terminals: a relay on loopback with per-run
// secrets, the agent registered with it, and the viewer secret left for
// `relay ctl shell` (0600), removed on stop.
func TestStackServesTerminals(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a unix shell")
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv(EnvDevData, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := Start(ctx, Options{NATSPort: -1, RelayPort: -1, APIPort: -1, WorkspaceRoot: t.TempDir(), Out: io.Discard,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	url, secret, err := ReadDevFiles("")
	if err != nil || url != st.RelayURL() || !bytes.Equal(secret, st.StreamSecret()) {
		t.Fatalf("dev files: %q %v (stack %q)", url, err, st.RelayURL())
	}
	if fi, err := os.Stat(st.SecretFile()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode: %v %v", fi.Mode(), err)
	}

	// The platform's NATS admits agents through the auth callout and the
	// control plane as its control user.
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
		PtyOptions:   control.PtyOptions{Command: []string{"/bin/sh"}, Env: map[string]string{"PS1": "$ "}},
		StreamSecret: secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := term.Send(octx, []byte("echo dev-$((20+1)); exit 4\r")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for b := range term.Output() {
		out.Write(b)
	}
	if !bytes.Contains(out.Bytes(), []byte("dev-21\r\n")) {
		t.Fatalf("output %q", out.Bytes())
	}
	if code, err := term.Close(octx); err != nil || code != 4 {
		t.Fatalf("exit code %d, %v", code, err)
	}

	cancel()
	if err := st.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(st.SecretFile()) + "/" + SecretFileName); !os.IsNotExist(err) {
		t.Fatalf("secret file left behind: %v", err)
	}
}
