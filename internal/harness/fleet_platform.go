package harness

// The fleet's one seam to the in-process platform. Everything the fleet
// needs of it goes through fleetTarget, so when the platform moves out of
// internal/devstack only this file changes (its import and these calls).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/opengeni/opengeni-agent/internal/devstack"
)

// startLocalPlatform starts the whole platform in this process (embedded
// nats-server with JetStream and the auth callout, the store and its
// ingestion, the enrollment API) on free loopback ports, its state in
// dataDir.
func startLocalPlatform(ctx context.Context, dataDir string, log *slog.Logger) (*fleetTarget, error) {
	p, err := devstack.StartPlatform(ctx, devstack.PlatformOptions{DataDir: dataDir, NATSPort: -1, HTTPPort: -1, Logger: log})
	if err != nil {
		return nil, err
	}
	secret, err := readSigningSecret(p.DataDir())
	if err != nil {
		p.Close()
		return nil, err
	}
	ctl, err := devstack.ReadCtlFile(p.DataDir())
	if err != nil {
		p.Close()
		return nil, err
	}
	srv := p.Server()
	return &fleetTarget{
		Description:    "in-process platform (devstack.StartPlatform: embedded nats-server + auth callout + store + ingestion)",
		URLs:           []string{p.NATSURL()},
		WorkspaceID:    p.WorkspaceID(),
		SigningSecret:  secret,
		ControlOptions: p.ControlNATSOptions(),
		Store:          p.Store(),
		InProcess:      true,
		Varz:           func(context.Context) (*server.Varz, error) { return srv.Varz(nil) },
		Close:          p.Close,
		AsExternal: ExternalPlatform{URLs: []string{ctl.NATSURL}, ControlUser: ctl.User, ControlPassword: ctl.Password,
			SigningSecret: secret, WorkspaceID: ctl.WorkspaceID},
	}, nil
}

// readSigningSecret reads the oge_ bearer signing secret the platform keeps
// in its state file (platform.json, "signingSecret"): the platform has no
// accessor for it, and the fleet mints each machine's bearer the way the
// enrollment API does (enroll.MintBearerGeneration).
func readSigningSecret(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, devstack.PlatformStateFile))
	if err != nil {
		return "", fmt.Errorf("fleet: platform state: %w", err)
	}
	var st struct {
		SigningSecret string `json:"signingSecret"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.SigningSecret == "" {
		return "", fmt.Errorf("fleet: no signing secret in %s (%v)", devstack.PlatformStateFile, err)
	}
	return st.SigningSecret, nil
}
