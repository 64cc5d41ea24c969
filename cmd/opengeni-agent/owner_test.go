package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/opengeni/opengeni-agent/internal/syncbuf"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent/audit"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The owner's view through the binary's commands: `run` serving a stored
// connection over real NATS records every op in <config>/audit; `pause`
// stops the running agent's next op and `resume` lets it back, without a
// restart; `audit` reads the files (rotated ones included, in order) as a
// table or JSON lines, filtered.
func TestOwnerViewThroughTheCLI(t *testing.T) {
	store := isolate(t)
	ns := startNATS(t, "oge_test")
	c := saveConn(t, store, "ws-owner", ns.ClientURL())
	nc := natstest.Connect(t, ns, nats.Token("oge_test"))

	// Small files, so the records span rotations.
	log, err := openAudit(store.Dir(), auditFlags{MaxFileBytes: 1200, MaxFiles: 50}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runStored(ctx, store, storedRunOptions{Audit: log}, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		closeAudit(log)
	})

	call := func(id string, op *agentpb.ControlRequest) *agentpb.ControlResponse {
		t.Helper()
		op.RequestId = id
		b, _ := proto.Marshal(op)
		var rep *nats.Msg
		natstest.Eventually(t, 10*time.Second, func() error { // the agent may still be connecting
			var err error
			rep, err = nc.Request(c.Subject("rpc"), b, 5*time.Second)
			return err
		})
		var resp agentpb.ControlResponse
		if err := proto.Unmarshal(rep.Data, &resp); err != nil {
			t.Fatal(err)
		}
		return &resp
	}
	stat := &agentpb.ControlRequest{Op: &agentpb.ControlRequest_FsStat{FsStat: &agentpb.FsStatRequest{Path: "nothing-here"}}}
	ping := &agentpb.ControlRequest{Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: 1}}}
	for i := range 10 {
		if r := call("before-"+string(rune('a'+i)), stat); r.GetError() != nil {
			t.Fatalf("stat: %v", r)
		}
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"pause", "--for", "1h"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "Paused until") {
		t.Fatalf("pause: %d %s %s", code, out.String(), errOut.String())
	}
	r := call("while-paused", stat)
	if e := r.GetError(); e.GetCode() != agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED || !strings.Contains(e.GetMessage(), "paused by the machine's owner until") {
		t.Fatalf("op while paused: %v", r)
	}
	if r := call("ping-paused", ping); r.GetPing() == nil {
		t.Fatalf("ping while paused: %v", r)
	}
	out.Reset()
	if code := run([]string{"resume"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "Resumed") {
		t.Fatalf("resume: %d %s", code, out.String())
	}
	if r := call("after-resume", stat); r.GetError() != nil {
		t.Fatalf("op after resume: %v", r)
	}
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelFlush()
	if err := log.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	if files, _ := audit.Files(auditDir(store.Dir())); len(files) < 2 {
		t.Fatalf("want rotated files, have %v", files)
	}

	// JSON lines, filtered by op, oldest first across the files.
	out.Reset()
	if code := run([]string{"audit", "--json", "--op", "fs_stat"}, &out, &errOut); code != 0 {
		t.Fatalf("audit --json: %d %s", code, errOut.String())
	}
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec audit.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if rec.Op != "fs_stat" || rec.Connection != c.ID() || rec.Platform != "https://api.test" || rec.Args.Path != "nothing-here" {
			t.Fatalf("record %+v", rec)
		}
		ids = append(ids, rec.RequestID)
	}
	want := "before-a before-b before-c before-d before-e before-f before-g before-h before-i before-j while-paused after-resume"
	if strings.Join(ids, " ") != want {
		t.Fatalf("fs_stat records %v, want %s", ids, want)
	}

	// The table, with the refusal and the pause in it.
	out.Reset()
	if code := run([]string{"audit", "--since", "1h", "--connection", c.ID()[:6]}, &out, &errOut); code != 0 {
		t.Fatalf("audit: %d %s", code, errOut.String())
	}
	table := out.String()
	for _, want := range []string{"TIME", "CONNECTION", "OP", "RESULT", c.ID(), "fs_stat", "CONSENT_REQUIRED (paused)", "nothing-here", "ping", "paused by the owner until", "resumed by the owner"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "oge_test") {
		t.Error("the table shows the connection's bearer")
	}
	// Filters that select nothing print only the header.
	out.Reset()
	if code := run([]string{"audit", "--connection", "no-such-connection"}, &out, &errOut); code != 0 || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("filtered-out table: %d %q", code, out.String())
	}
	// The log files are the owner's alone.
	files, _ := audit.Files(auditDir(store.Dir()))
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, st.Mode().Perm())
		}
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte("oge_test")) {
			t.Errorf("%s contains the bearer", f)
		}
	}
}

// `audit --follow` prints an op the running agent serves after it started.
func TestAuditFollowShowsNewOps(t *testing.T) {
	store := isolate(t)
	ns := startNATS(t, "oge_test")
	c := saveConn(t, store, "ws-follow", ns.ClientURL())
	nc := natstest.Connect(t, ns, nats.Token("oge_test"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runStored(ctx, store, storedRunOptions{}, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })

	followCtx, stopFollow := context.WithCancel(context.Background())
	prev := followContext
	followContext = func() (context.Context, context.CancelFunc) { return followCtx, stopFollow }
	t.Cleanup(func() { followContext = prev })
	out := &syncbuf.Buffer{}
	followed := make(chan int, 1)
	go func() { followed <- run([]string{"audit", "--follow", "--op", "fs_list"}, out, io.Discard) }()

	req, _ := proto.Marshal(&agentpb.ControlRequest{RequestId: "followed-op", Op: &agentpb.ControlRequest_FsList{FsList: &agentpb.FsListRequest{Path: "."}}})
	natstest.Eventually(t, 10*time.Second, func() error { // the agent may still be connecting
		_, err := nc.Request(c.Subject("rpc"), req, 5*time.Second)
		return err
	})
	natstest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), "fs_list") {
			return io.ErrNoProgress
		}
		return nil
	})
	stopFollow()
	if code := <-followed; code != 0 {
		t.Fatalf("audit --follow exit %d", code)
	}
	if !strings.Contains(out.String(), c.ID()) {
		t.Fatalf("followed output %q", out.String())
	}
}
