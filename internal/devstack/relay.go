package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/relay"
	"github.com/opengeni/opengeni-agent/relay/revocation"
)

// Files in the platform's data directory that `relay ctl shell` reads.
const (
	SecretFileName   = "viewer.secret"
	RelayURLFileName = "relay.url"
)

type devRelay struct {
	url          string
	streamSecret []byte
	cancel       context.CancelFunc
	done         chan struct{}
}

// revocationSyncTimeout bounds the wait for the relay's first revocation
// sync (the local agent would be refused, retryably, until then).
const revocationSyncTimeout = 15 * time.Second

// startRelay runs a relay on loopback with the platform's persisted
// secrets; the enrollment API mints the agent's ogr_ token. The relay
// watches revocations through rev and is returned once that watch synced.
func startRelay(ctx context.Context, opts Options, streamSecret, agentSecret []byte, rev revocation.Config) (*devRelay, error) {
	port := opts.RelayPort
	if port == 0 {
		port = DefaultRelayPort
	}
	if port < 0 {
		port = 0
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.Host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("devstack: relay port %d is busy (another `relay dev`? use -relay-port): %w", port, err)
	}
	w, stopWatch, err := rev.Connect(opts.Logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	select {
	case <-w.Synced():
	case <-ctx.Done():
		stopWatch()
		ln.Close()
		return nil, ctx.Err()
	case <-time.After(revocationSyncTimeout):
		stopWatch()
		ln.Close()
		return nil, fmt.Errorf("devstack: the relay's revocation watch did not sync within %v", revocationSyncTimeout)
	}
	ro := relay.DefaultOptions()
	ro.Bind = ln.Addr().String()
	ro.StreamTokenSecret = string(streamSecret)
	ro.RelayTokenSecret = string(agentSecret)
	ro.TrustedProxies = opts.TrustedProxies
	ro.Revocations = w
	srv, err := relay.New(ro, opts.Logger)
	if err != nil {
		stopWatch()
		ln.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &devRelay{
		url:          "ws://" + ln.Addr().String() + "/stream",
		streamSecret: streamSecret,
		cancel:       cancel,
		done:         make(chan struct{}),
	}
	go func() {
		defer close(r.done)
		defer stopWatch()
		if err := srv.Serve(ctx, ln); err != nil {
			opts.Logger.Error("dev relay stopped", "err", err)
		}
	}()
	return r, nil
}

func (r *devRelay) stop() {
	r.cancel()
	<-r.done
}

// Dir is where a running dev stack with the default data directory leaves
// its relay URL and viewer secret for `relay ctl`.
func Dir() (string, error) { return PlatformDataDir() }

// writeDevFiles writes the viewer secret and the relay URL into dir (the
// platform's data directory), each 0600 in a 0700 directory, replacing
// (never following) what was there.
func writeDevFiles(dir, relayURL string, secret []byte) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		if err == nil {
			err = fmt.Errorf("%s is not a private directory", dir)
		}
		return nil, err
	}
	var files []string
	for _, f := range []struct {
		name string
		data []byte
	}{{SecretFileName, secret}, {RelayURLFileName, []byte(relayURL)}} {
		p := filepath.Join(dir, f.name)
		os.Remove(p)
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return files, err
		}
		_, err = fh.Write(append(f.data, '\n'))
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
}

// ReadDevFiles returns the relay URL and viewer secret a running `relay dev`
// left in its data directory dir ("" = the default, Dir()).
func ReadDevFiles(dir string) (relayURL string, secret []byte, err error) {
	if dir == "" {
		if dir, err = Dir(); err != nil {
			return "", nil, err
		}
	}
	sb, err := os.ReadFile(filepath.Join(dir, SecretFileName))
	if err != nil {
		return "", nil, err
	}
	ub, err := os.ReadFile(filepath.Join(dir, RelayURLFileName))
	if err != nil {
		return "", nil, err
	}
	secret = []byte(strings.TrimSpace(string(sb)))
	if len(secret) == 0 {
		return "", nil, errors.New("devstack: empty viewer secret file")
	}
	return strings.TrimSpace(string(ub)), secret, nil
}
