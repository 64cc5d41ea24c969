package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/instancelock"
	"github.com/opengeni/opengeni-agent/internal/testutil"
)

func creds(ws string) *config.Credentials {
	return &config.Credentials{AgentID: "agent-" + ws, WorkspaceID: ws, NATSBearer: "oge_test", NATSURLs: []string{"nats://x"},
		ConsentedWholeMachine: true, UpdateChannel: "stable", APIURL: "https://api.test"}
}

func saveConn(t *testing.T, store *config.Store, ws string) *config.Credentials {
	t.Helper()
	c := creds(ws)
	if _, err := store.Save(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.EventuallyTrue(t, 10*time.Second, what, cond)
}

// serveUntilDone is a ServeFunc that reports each start and blocks until
// its context ends.
func serveUntilDone(started chan<- string) ServeFunc {
	return func(ctx context.Context, id string, _ *config.Credentials) error {
		started <- id
		<-ctx.Done()
		return nil
	}
}

// TestStartRefusesAConnectionServedElsewhere: at start, a connection whose
// lock another process holds makes Start stop everything it started and
// return the ContendedError (the caller exits, a second copy).
func TestStartRefusesAConnectionServedElsewhere(t *testing.T) {
	store := config.NewStore(t.TempDir())
	saveConn(t, store, "ws-a")
	b := saveConn(t, store, "ws-b")
	held, err := instancelock.Acquire(store.LockPath(b.ID()))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	started := make(chan string, 4)
	sup := New(Options{Store: store, Logger: slog.New(slog.DiscardHandler), Serve: serveUntilDone(started)})
	var ce *instancelock.ContendedError
	if err := sup.Start(context.Background()); !errors.As(err, &ce) {
		t.Fatalf("Start = %v, want a ContendedError", err)
	}
	if n := sup.Count(); n != 0 {
		t.Fatalf("%d connections still served after a refused start", n)
	}
}

// TestRunRetriesAConnectionServedElsewhere: once running, a connection
// another process serves is skipped, then served once that process let go;
// Run's end stops it with Run's cause.
func TestRunRetriesAConnectionServedElsewhere(t *testing.T) {
	store := config.NewStore(t.TempDir())
	started := make(chan string, 4)
	sup := New(Options{Store: store, Logger: slog.New(slog.DiscardHandler), Serve: serveUntilDone(started),
		ReloadInterval: time.Millisecond})
	ctx, cancel := context.WithCancelCause(context.Background())
	if err := sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { sup.Run(ctx); close(ran) }()

	a := creds("ws-a")
	held, err := instancelock.Acquire(store.LockPath(a.ID())) // before a is stored
	if err != nil {
		t.Fatal(err)
	}
	saveConn(t, store, "ws-a")
	b := saveConn(t, store, "ws-b")
	if id := <-started; id != b.ID() {
		t.Fatalf("served %s first, want %s (a is held elsewhere)", id, b.ID())
	}
	held.Release()
	if id := <-started; id != a.ID() {
		t.Fatalf("served %s, want %s once its lock was free", id, a.ID())
	}
	cancel(errors.New("stop"))
	<-ran
	if l, err := instancelock.Acquire(store.LockPath(a.ID())); err != nil {
		t.Fatal("lock kept after Run returned:", err)
	} else {
		l.Release()
	}
}

// TestSupervisorFollowsTheDirectory: a new connection starts, a consent
// change restarts nothing, a new bearer restarts (StopReplaced), a removed
// connection stops (StopRemoved) and frees its lock.
func TestSupervisorFollowsTheDirectory(t *testing.T) {
	store := config.NewStore(t.TempDir())
	type call struct {
		id     string
		bearer string
	}
	var mu sync.Mutex
	var started []call
	causes := map[string][]error{}
	serve := func(ctx context.Context, id string, c *config.Credentials) error {
		mu.Lock()
		started = append(started, call{id, c.NATSBearer})
		mu.Unlock()
		<-ctx.Done()
		mu.Lock()
		causes[id] = append(causes[id], context.Cause(ctx))
		mu.Unlock()
		return nil
	}
	a := saveConn(t, store, "ws-a")
	sup := New(Options{Store: store, Logger: slog.New(slog.DiscardHandler), Serve: serve})
	ctx := context.Background()
	if err := sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b := saveConn(t, store, "ws-b")
	sup.reconcile(ctx, false)
	waitFor(t, "two connections served", func() bool { mu.Lock(); defer mu.Unlock(); return len(started) == 2 })
	if sup.Count() != 2 {
		t.Fatalf("running %d", sup.Count())
	}
	// The locks are held while serving.
	if _, err := instancelock.Acquire(store.LockPath(a.ID())); err == nil {
		t.Fatal("lock not held")
	}
	// Consent changes do not restart; a new bearer does.
	_ = store.SetScreenControl(a.ID(), true)
	sup.reconcile(ctx, false)
	a.NATSBearer = "oge_rotated"
	_, _ = store.Save(a)
	sup.reconcile(ctx, false)
	waitFor(t, "a restarted", func() bool { mu.Lock(); defer mu.Unlock(); return len(started) == 3 })
	mu.Lock()
	if started[2].id != a.ID() || started[2].bearer != "oge_rotated" {
		t.Fatalf("restart %+v", started[2])
	}
	mu.Unlock()
	// Removing b stops it with the "removed" reason and frees its lock.
	_ = store.Remove(b.ID())
	sup.reconcile(ctx, false)
	waitFor(t, "b stopped", func() bool { mu.Lock(); defer mu.Unlock(); return len(causes[b.ID()]) == 1 })
	mu.Lock()
	if causes[b.ID()][0] != error(StopRemoved) || causes[a.ID()][0] != error(StopReplaced) {
		t.Fatalf("causes %v", causes)
	}
	mu.Unlock()
	waitFor(t, "b's lock released", func() bool {
		l, err := instancelock.Acquire(store.LockPath(b.ID()))
		if err != nil {
			return false
		}
		l.Release()
		return true
	})
	sup.stopAll(nil)
	if l, err := instancelock.Acquire(store.LockPath(a.ID())); err != nil {
		t.Fatal("lock kept after stopAll:", err)
	} else {
		l.Release()
	}
}
