//go:build unix

package pty

import (
	"context"
	"sync"
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// pty_open with a scope_id (next revision): the same non-empty scope
// reattaches the live terminal, even when opens race; a different scope, no
// scope, or a scope whose terminal exited starts a new one.
func TestScopeReattachesLiveTerminal(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	first := h.open(&agentpb.PtyOpenRequest{ScopeId: "tab-1"})
	v := h.viewer(first)
	v.WaitOutput("a prompt", func(out []byte) bool { return len(out) > 0 })
	v.Send("MARK=reattached\r")

	var wg sync.WaitGroup
	ids := make(chan string, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h.svc.Open(ctx, &agentpb.PtyOpenRequest{ScopeId: "tab-1", Cols: 100, Rows: 30})
			if err != nil {
				t.Error(err)
				return
			}
			ids <- resp.GetPtyId()
		}()
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		if id != first.GetPtyId() {
			t.Fatalf("scope tab-1 opened %s, want the live %s", id, first.GetPtyId())
		}
	}
	if n := h.svc.Live(); n != 1 {
		t.Fatalf("%d live terminals after reattaching, want 1", n)
	}
	// The shell is the same one: its variable is still set.
	v.Send("echo [$MARK]\r")
	v.WaitContains("[reattached]")

	other := h.open(&agentpb.PtyOpenRequest{ScopeId: "tab-2"})
	unscoped := h.open(&agentpb.PtyOpenRequest{})
	if other.GetPtyId() == first.GetPtyId() || unscoped.GetPtyId() == first.GetPtyId() {
		t.Fatal("another scope or no scope reattached")
	}
	// Once the scope's terminal exited, the scope starts a new one.
	if _, err := h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: first.GetPtyId()}); err != nil {
		t.Fatal(err)
	}
	again := h.open(&agentpb.PtyOpenRequest{ScopeId: "tab-1"})
	if again.GetPtyId() == first.GetPtyId() {
		t.Fatal("an exited terminal was reattached")
	}
	h.svc.mu.Lock()
	locks := len(h.svc.scopeLocks)
	h.svc.mu.Unlock()
	if locks != 0 {
		t.Fatalf("%d scope locks left after the opens returned", locks)
	}
}
