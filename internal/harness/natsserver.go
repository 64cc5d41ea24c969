package harness

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSServerCommand is the hidden subcommand under which the harness runs a
// nats-server in its own process (so it can be frozen, killed and restarted
// on the same port).
const NATSServerCommand = "__nats-server"

// ServeNATS runs a nats-server (no auth, JetStream off, default max payload)
// on 127.0.0.1:port (0: a random port) until SIGTERM or SIGINT, and prints
// "ready <host:port>" on out once it accepts clients.
func ServeNATS(port int, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.NewServer(&server.Options{
		Host:   "127.0.0.1",
		Port:   port,
		NoLog:  true,
		NoSigs: true,
	})
	if err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats-server: not ready on port %d", port)
	}
	fmt.Fprintf(out, "ready %s\n", srv.Addr())
	<-ctx.Done()
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}
