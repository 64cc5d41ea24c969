package installers

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
)

const testWorkspace = "0b5e6a52-5c1e-4c57-9d43-2f5f1d7e8a01"

// enrollAPI serves the real enrollment API (control/enroll over JetStream)
// on loopback and mints an enroll token for testWorkspace.
func enrollAPI(t *testing.T) (url, token string, st *store.Store) {
	t.Helper()
	ns := natstest.Start(t, natstest.JetStream(t.TempDir()))
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	st, err = store.New(context.Background(), js, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "install-test-signing-secret"
	api, err := enroll.New(enroll.Config{Store: st, Authorizer: enroll.StaticToken{Token: "admin"}, Enabled: true,
		SigningSecret: secret, NATSURL: ns.ClientURL(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	token, _, err = enroll.MintEnrollToken(secret, testWorkspace, "", false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return srv.URL, token, st
}

// TestInstallWithTokenWithoutServiceManager: install.sh with a token on a
// host whose service manager cannot be reached (no user bus; no systemctl)
// installs, enrolls, says there is no background service and how to run the
// agent, and exits 0.
func TestInstallWithTokenWithoutServiceManager(t *testing.T) {
	systemctl, _ := exec.LookPath("systemctl")
	cases := []struct {
		name, shell string
		path        func(t *testing.T) string
		reason      string
	}{
		{"no user bus", "dash", func(t *testing.T) string {
			if systemctl == "" {
				t.Skip("SKIP (not a pass): systemctl is not installed")
			}
			return os.Getenv("PATH")
		}, "service manager unavailable (no user bus: nothing answers at XDG_RUNTIME_DIR="},
		{"no systemctl", "sh", func(t *testing.T) string { return toolPath(t, false) }, "service manager unavailable (systemctl is not installed)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			r := newRelease(t)
			apiURL, token, st := enrollAPI(t)
			nowhere := filepath.Join(t.TempDir(), "nowhere")
			res := runInstall(t, tc.shell, r, path, "OPENGENI_INSTALL_NO_SERVICE=0", "OPENGENI_ENROLL_TOKEN="+token, "OPENGENI_API_URL="+apiURL,
				"XDG_RUNTIME_DIR="+nowhere, "DBUS_SESSION_BUS_ADDRESS=unix:path="+nowhere+"/bus", "USER=nobody")
			bin := filepath.Join(res.home, ".local", "bin", "opengeni-agent")
			for _, want := range []string{"Enrolled.", tc.reason, "opengeni-agent run` in a terminal",
				"installed and enrolled; no background service (the reason is above). Start the agent with: " + bin + " run"} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if res.code != 0 {
				t.Errorf("exit %d, want 0", res.code)
			}
			if t.Failed() {
				t.Fatalf("output:\n%s", res.stderr)
			}
			// the machine is enrolled on the platform and holds its credentials
			ens, err := st.ListEnrollments(context.Background(), testWorkspace, "")
			if err != nil || len(ens) != 1 || ens[0].Status != "active" {
				t.Fatalf("platform enrollments: %+v %v", ens, err)
			}
			cmd := exec.Command(bin, "connections")
			cmd.Env = []string{"HOME=" + res.home, "PATH=" + path}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), testWorkspace) {
				t.Fatalf("connections: %v\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(res.home, ".config", "systemd", "user", "opengeni-agent.service")); err == nil {
				t.Fatal("a unit was written although the service manager is unavailable")
			}
			t.Logf("install output:\n%s", res.stderr)
		})
	}
}
