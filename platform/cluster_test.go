package platform

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
)

var update = flag.Bool("update", false, "rewrite deploy/nats-cluster/accounts.conf")

// clusterDir holds the shipped example cluster configuration.
const clusterDir = "../deploy/nats-cluster"

// The shipped accounts.conf is what the platform expects of its servers
// (the embedded server runs the same text).
func TestShippedAccountsConfig(t *testing.T) {
	fn := filepath.Join(clusterDir, "accounts.conf")
	if *update {
		if err := os.WriteFile(fn, []byte(AccountsConfig()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(fn)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != AccountsConfig() {
		t.Fatalf("%s differs from platform.AccountsConfig(); regenerate with `go test ./platform -run TestShippedAccountsConfig -update` "+
			"or `relay platform nats-config > %s`", fn, fn)
	}
}

// clusterNode is one in-process nats-server of a test cluster.
type clusterNode struct {
	name string
	srv  *server.Server
	opts *server.Options
}

// testCluster is three nats-servers on loopback routes with JetStream,
// configured from the shipped node*.conf files (ports, store directories
// and routes rewritten for the test).
type testCluster struct {
	t     testing.TB
	nodes []*clusterNode
}

// setSecretsEnv exports s as the servers' config reads it.
func setSecretsEnv(t testing.TB, s Secrets) {
	t.Helper()
	env, err := s.Env()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(env))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		os.Setenv(k, v) // t.Setenv refuses benchmarks' parallel use; restored below
		t.Cleanup(func() { os.Unsetenv(k) })
	}
}

// freshSecrets is a full set of secrets.
func freshSecrets(t testing.TB) Secrets {
	t.Helper()
	var s Secrets
	if _, err := s.Fill(); err != nil {
		t.Fatal(err)
	}
	return s
}

// startCluster starts the three shipped nodes with secrets s and waits
// until JetStream has a meta leader that every node follows.
func startCluster(t testing.TB, s Secrets) *testCluster {
	t.Helper()
	setSecretsEnv(t, s)
	c := &testCluster{t: t}
	// JetStream wants every node's routes at start: pick the loopback
	// cluster ports first.
	var routes []*url.URL
	ports := make([]int, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: l.Addr().String()})
	}
	for i := 1; i <= 3; i++ {
		o, err := server.ProcessConfigFile(filepath.Join(clusterDir, fmt.Sprintf("node%d.conf", i)))
		if err != nil {
			t.Fatalf("node%d.conf: %v", i, err)
		}
		if o.Cluster.Name != "opengeni" || o.ServerName != fmt.Sprintf("nats-%d", i) || !o.JetStream || len(o.Routes) != 3 || o.AuthCallout == nil {
			t.Fatalf("node%d.conf: cluster %q name %q jetstream %v routes %d callout %+v", i, o.Cluster.Name, o.ServerName,
				o.JetStream, len(o.Routes), o.AuthCallout)
		}
		o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
		o.HTTPHost, o.HTTPPort = "", 0
		o.Cluster.Host, o.Cluster.Port = "127.0.0.1", ports[i-1]
		o.Routes = routes
		o.StoreDir = t.TempDir()
		o.NoLog, o.NoSigs = os.Getenv("PLATFORM_TEST_NATSLOG") == "", true
		n := &clusterNode{name: o.ServerName, opts: o}
		if n.srv, err = server.NewServer(o); err != nil {
			t.Fatalf("%s: %v", o.ServerName, err)
		}
		if !o.NoLog {
			n.srv.ConfigureLogger()
		}
		go n.srv.Start()
		if !n.srv.ReadyForConnections(15 * time.Second) {
			t.Fatalf("%s did not start", o.ServerName)
		}
		t.Cleanup(n.srv.Shutdown)
		c.nodes = append(c.nodes, n)
	}
	c.waitMetaLeader(nil)
	return c
}

// live are the nodes still running.
func (c *testCluster) live() []*clusterNode {
	var out []*clusterNode
	for _, n := range c.nodes {
		if n.srv.Running() {
			out = append(out, n)
		}
	}
	return out
}

// urls are the live nodes' client URLs.
func (c *testCluster) urls() []string {
	var out []string
	for _, n := range c.live() {
		out = append(out, n.srv.ClientURL())
	}
	return out
}

// metaLeader is the node leading the JetStream meta group, or nil.
func (c *testCluster) metaLeader() *clusterNode {
	for _, n := range c.live() {
		if n.srv.JetStreamIsLeader() {
			return n
		}
	}
	return nil
}

// waitMetaLeader waits until a live node other than not leads the meta
// group and every live node is current with it.
func (c *testCluster) waitMetaLeader(not *clusterNode) *clusterNode {
	c.t.Helper()
	var leader *clusterNode
	natstest.Eventually(c.t, 60*time.Second, func() error {
		leader = c.metaLeader()
		if leader == nil || leader == not {
			return fmt.Errorf("no JetStream meta leader among %d live nodes", len(c.live()))
		}
		for _, n := range c.live() {
			if !n.srv.JetStreamIsCurrent() {
				return fmt.Errorf("%s is not current with the meta leader", n.name)
			}
		}
		return nil
	})
	return leader
}

// kill stops n and waits for it.
func (c *testCluster) kill(n *clusterNode) {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// nodeOf is the live node whose server id is id.
func (c *testCluster) nodeOf(id string) *clusterNode {
	for _, n := range c.live() {
		if n.srv.ID() == id {
			return n
		}
	}
	return nil
}

// waitBucketsLed waits until every store bucket has a stream leader and
// its replicas (R3) are current: the KV is writable.
func waitBucketsLed(t testing.TB, p *Platform) {
	t.Helper()
	js, err := jetstream.New(p.Conn())
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, b := range bucketNames() {
			st, err := js.Stream(ctx, "KV_"+b)
			if err != nil {
				return err
			}
			ci := st.CachedInfo().Cluster
			if ci == nil || ci.Leader == "" {
				return fmt.Errorf("%s has no leader", b)
			}
		}
		return nil
	})
}

// bucketNames are the store's buckets (default prefix).
func bucketNames() []string {
	return []string{store.EnrollmentsBucket(""), store.DefaultPrefix + "_devices", store.DefaultPrefix + "_machines"}
}

// The shipped configuration starts a 3-node JetStream cluster with the
// auth callout, and the platform runs on it with replicated buckets.
func TestShippedClusterConfigs(t *testing.T) {
	c, p := startClusterPlatform(t)
	js, err := jetstream.New(p.Conn())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bucketNames() {
		st, err := js.Stream(t.Context(), "KV_"+b)
		if err != nil {
			t.Fatal(err)
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Name != "opengeni" || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("%s: replicas %d cluster %+v", b, info.Config.Replicas, info.Cluster)
		}
	}
	if p.Server() != nil {
		t.Fatal("an embedded server ran beside the external cluster")
	}
	// The callout answers on every node, wherever its responder is
	// connected: an agent's bearer is admitted by each node alone.
	creds := pair(t, p)
	for _, n := range c.nodes {
		nc, err := nats.Connect(n.srv.ClientURL(), nats.Token(creds.NATSBearer), nats.NoReconnect(), nats.Timeout(10*time.Second))
		if err != nil {
			t.Fatalf("%s refused the bearer: %v", n.name, err)
		}
		if got := nc.ConnectedServerName(); got != n.name {
			t.Fatalf("connected to %s, want %s", got, n.name)
		}
		nc.Close()
	}
	if _, err := nats.Connect(c.nodes[1].srv.ClientURL(), nats.Token("oge_forged"), nats.NoReconnect()); err == nil {
		t.Fatal("a forged bearer was admitted")
	}
}
