package harness

// The fleet's one seam to the in-process platform. Everything the fleet
// needs of it goes through fleetTarget, so when the platform moves out of
// internal/devstack only this file changes (its import and these calls).

import (
	"context"
	"log/slog"

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
	secret := p.SigningSecret()
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
