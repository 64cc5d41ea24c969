package devstack

import (
	"log/slog"

	"github.com/opengeni/opengeni-agent/console"
	"github.com/opengeni/opengeni-agent/control"
)

// MountConsole serves the web console (package console) on the platform's
// enrollment API origin, signed in with the admin token; stop ends its
// terminals, desktop viewers and NATS connection.
func (s *Stack) MountConsole(logger *slog.Logger) (stop func(), err error) {
	p := s.platform
	rpc := control.NewNATSRPC(p.ControlConnFactory())
	c, err := console.New(console.Config{WorkspaceID: p.WorkspaceID(), AdminToken: p.AdminToken(), Store: p.Store(),
		Enrollment: p.APIHandler(), RPC: rpc, Relay: control.ParseRelayURL(s.RelayURL()), StreamSecret: s.StreamSecret(),
		APIURL: p.APIURL(), Logger: logger})
	if err != nil {
		rpc.Close()
		return nil, err
	}
	p.SetUI(c)
	return func() { c.Close(); rpc.Close() }, nil
}
