package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/instancelock"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// goingOfflineTimeout bounds disconnect's best-effort NATS announcement.
var goingOfflineTimeout = 5 * time.Second

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// runState says whether an agent process is serving connection id (read
// from the lock file's pid, never by taking the lock).
func runState(store *config.Store, id string) string {
	pid, ok := instancelock.HolderPID(store.LockPath(id))
	if !ok {
		return "not running"
	}
	out := fmt.Sprintf("running (pid %d)", pid)
	if link := linkState(store, id); link != "" {
		out += "; " + link
	}
	return out
}

// linkState describes the running agent's live link of connection id:
// connected, retrying since T with the last error, or denied (and what to
// do); "" when the agent has not reported one.
func linkState(store *config.Store, id string) string {
	b, err := os.ReadFile(store.LinkStatePath(id))
	if err != nil {
		return ""
	}
	var st agent.ConnState
	if json.Unmarshal(b, &st) != nil {
		return ""
	}
	since := st.Since.Local().Format(time.DateTime)
	switch st.State {
	case agent.StateConnected:
		return "connected to " + st.Server + " since " + since
	case agent.StateConnecting:
		return "connecting to " + st.Server + " since " + since
	case agent.StateRetrying:
		return fmt.Sprintf("retrying since %s (last error: %s)", since, st.LastError)
	case agent.StateDenied:
		return fmt.Sprintf("credential refused since %s (%s); if it persists: opengeni-agent connect --force --workspace-id <id>", since, st.LastError)
	}
	return st.State
}

// cmdConnections lists the stored connections (no secrets).
func cmdConnections(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("connections", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if _, err := parseInterspersed(fs, args); err != nil {
		return flagExit(err)
	}
	store, err := openStore(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	conns, err := store.List()
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	if len(conns) == 0 {
		fmt.Fprintln(stdout, "No connections. Run `opengeni-agent connect --workspace-id <UUID>` to add one.")
		return 0
	}
	writeConnections(stdout, store, conns)
	return 0
}

func writeConnections(w io.Writer, store *config.Store, conns []config.Connection) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKSPACE\tAGENT\tAPI\tSCREEN CONTROL\tSTATE")
	for _, c := range conns {
		if c.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tunreadable: %v\n", c.ID, c.Err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Creds.WorkspaceID, c.Creds.AgentID, c.Creds.APIURL, onOff(c.Creds.ConsentedScreenControl), runState(store, c.ID))
	}
	_ = tw.Flush()
}

// cmdDisconnect removes one connection and announces GoingOffline for it.
func cmdDisconnect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("disconnect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: opengeni-agent disconnect <connection id | id prefix | workspace id>")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return 2
	}
	store, err := openStore(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	conn, err := store.Find(pos[0])
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	if err := store.Remove(conn.ID); err != nil && !errors.Is(err, config.ErrNotEnrolled) {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	if conn.Creds == nil {
		fmt.Fprintf(stdout, "Removed unreadable connection %s.\n", conn.ID)
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), goingOfflineTimeout)
	defer cancel()
	if err := publishGoingOffline(ctx, conn.Creds, "connection removed (opengeni-agent disconnect)"); err != nil {
		fmt.Fprintf(stderr, "opengeni-agent: warning: could not tell the platform this machine went offline (%v); it will notice from the missing heartbeats.\n", err)
	}
	fmt.Fprintf(stdout, "Disconnected %s (workspace %s, agent %s).\n", conn.ID, conn.Creds.WorkspaceID, conn.Creds.AgentID)
	fmt.Fprintln(stdout, "A running agent stops serving it within seconds. The enrollment stays active on the platform until it is revoked on the Machines page.")
	return 0
}

// publishGoingOffline connects briefly with the connection's bearer and
// publishes AgentEvent{going_offline USER_STOP} on agent.<ws>.<id>.events.
func publishGoingOffline(ctx context.Context, c *config.Credentials, message string) error {
	if len(c.NATSURLs) == 0 {
		return errors.New("no NATS URL stored")
	}
	timeout := goingOfflineTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	opts := []nats.Option{
		nats.Name("opengeni-agent/" + c.AgentID),
		nats.Timeout(timeout),
		nats.NoReconnect(),
	}
	if c.NATSBearer != "" {
		opts = append(opts, nats.Token(c.NATSBearer))
	}
	nc, err := nats.Connect(strings.Join(c.NATSURLs, ","), opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	ev := &agentpb.AgentEvent{AgentId: c.AgentID, Event: &agentpb.AgentEvent_GoingOffline{GoingOffline: &agentpb.GoingOffline{
		Reason:  agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP,
		Message: message,
	}}}
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	if err := nc.Publish(c.Subject("events"), b); err != nil {
		return err
	}
	return nc.FlushWithContext(ctx)
}

// cmdStatus summarizes the install: version, config dir, connections (and
// whether an agent serves each), then the background service's state
// (`status --system` for the machine-wide one). A service manager that
// cannot be reached is reported as such with exit 0: the status is known.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			return lifecycle("status", args, stdout, stderr, "status")
		}
	}
	fmt.Fprintf(stdout, "opengeni-agent %s\n", agent.Version)
	if store, err := openStore(stderr); err != nil {
		fmt.Fprintln(stdout, "config dir: unresolved:", err)
	} else {
		fmt.Fprintf(stdout, "config dir: %s\n", store.Dir())
		switch conns, err := store.List(); {
		case err != nil:
			fmt.Fprintln(stderr, "opengeni-agent:", err)
		case len(conns) == 0:
			fmt.Fprintln(stdout, notEnrolledMessage)
		default:
			fmt.Fprintf(stdout, "connections: %d\n", len(conns))
			writeConnections(stdout, store, conns)
		}
	}
	return lifecycle("status", args, stdout, stderr, "status")
}

// cmdConsent is `consent screen-control on|off [--connection <id>]`: the
// machine owner's local gate on desktop input, read live by a running agent.
func cmdConsent(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ref := fs.String("connection", "", "connection id, id prefix or workspace id (needed when there are several)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: opengeni-agent consent screen-control on|off [--connection <id>]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 2 || pos[0] != "screen-control" || (pos[1] != "on" && pos[1] != "off") {
		fs.Usage()
		return 2
	}
	on := pos[1] == "on"
	store, err := openStore(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	var conn config.Connection
	if *ref != "" {
		conn, err = store.Find(*ref)
	} else {
		conn, err = onlyConnection(store)
	}
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	if err := store.SetScreenControl(conn.ID, on); err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Screen control is now %s for connection %s; a running agent applies it to the next request.\n", onOff(on), conn.ID)
	return 0
}

func onlyConnection(store *config.Store) (config.Connection, error) {
	conns, err := store.List()
	if err != nil {
		return config.Connection{}, err
	}
	switch len(conns) {
	case 0:
		return config.Connection{}, errors.New(notEnrolledMessage)
	case 1:
		return conns[0], nil
	}
	ids := make([]string, len(conns))
	for i, c := range conns {
		ids[i] = c.ID
	}
	return config.Connection{}, fmt.Errorf("there are %d connections (%s); pass --connection <id>", len(conns), strings.Join(ids, ", "))
}
