package platform

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/relay"
)

// RelayOptions configure a stream relay run beside the platform.
type RelayOptions struct {
	// Addr is the listen address (host:port; port 0 picks a free one).
	Addr string
	// PublicURL is the dial base handed to agents (ws(s)://host/stream);
	// default ws://<listen address>/stream.
	PublicURL string
	// TrustedProxies may name the client in X-Forwarded-For for the
	// relay's per-IP limits.
	TrustedProxies []netip.Prefix
}

// Relay is a stream relay started by [Platform.StartRelay].
type Relay struct {
	url    string
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// revocationSyncTimeout bounds the wait for the relay's first revocation
// sync (agents would be refused, retryably, until then).
const revocationSyncTimeout = 15 * time.Second

// StartRelay runs a stream relay with the platform's secrets: it verifies
// the ogr_ tokens the enrollment API mints and the ogs_ viewer tokens, and
// watches revocations as the relay NATS user. It is returned once that
// watch synced, and from then on the API hands its URL to agents. Close
// stops it; the platform's Close does too.
func (p *Platform) StartRelay(ctx context.Context, o RelayOptions) (*Relay, error) {
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("platform: relay: %w", err)
	}
	rev := p.RelayRevocationConfig()
	w, stopWatch, err := rev.Connect(p.opts.Logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	fail := func(err error) (*Relay, error) {
		stopWatch()
		ln.Close()
		return nil, err
	}
	select {
	case <-w.Synced():
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-time.After(revocationSyncTimeout):
		return fail(fmt.Errorf("platform: the relay's revocation watch did not sync within %v", revocationSyncTimeout))
	}
	ro := relay.DefaultOptions()
	ro.Bind = ln.Addr().String()
	ro.StreamTokenSecret = p.opts.Secrets.StreamTokenSecret
	ro.RelayTokenSecret = p.opts.Secrets.RelayTokenSecret
	ro.TrustedProxies = o.TrustedProxies
	ro.Revocations = w
	srv, err := relay.New(ro, p.opts.Logger)
	if err != nil {
		return fail(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &Relay{url: o.PublicURL, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	if r.url == "" {
		r.url = "ws://" + r.addr + "/stream"
	}
	go func() {
		defer close(r.done)
		defer stopWatch()
		if err := srv.Serve(rctx, ln); err != nil {
			p.log.Error("relay stopped", "err", err)
		}
	}()
	if err := p.SetRelayURL(r.url); err != nil {
		r.Close()
		return nil, err
	}
	p.mu.Lock()
	p.relays = append(p.relays, r)
	p.mu.Unlock()
	return r, nil
}

// URL is the relay's dial base as handed to agents.
func (r *Relay) URL() string { return r.url }

// Addr is the relay's listen address.
func (r *Relay) Addr() string { return r.addr }

// Close stops the relay (idempotent) and waits for it.
func (r *Relay) Close() {
	r.once.Do(r.cancel)
	<-r.done
}
