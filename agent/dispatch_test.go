package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func newTestDispatcher(maxHeavy int) *Dispatcher {
	d := NewDispatcher(nil, maxHeavy)
	Handle(d, "ping", Light, func(_ context.Context, r *agentpb.PingRequest) (*agentpb.PingResponse, error) {
		return &agentpb.PingResponse{Nonce: r.GetNonce()}, nil
	})
	Handle(d, "fs_stat", Heavy, func(_ context.Context, r *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
		switch r.GetPath() {
		case "missing":
			return nil, fmt.Errorf("stat missing: %w", fs.ErrNotExist)
		case "panic":
			panic("boom")
		case "big":
			return &agentpb.FsStatResponse{Exists: true, Entry: &agentpb.FsEntry{Name: strings.Repeat("x", 4000)}}, nil
		}
		return &agentpb.FsStatResponse{Exists: true}, nil
	})
	return d
}

func roundTrip(t *testing.T, d *Dispatcher, req *agentpb.ControlRequest, maxPayload int) *agentpb.ControlResponse {
	t.Helper()
	return decodeReply(t, d.Dispatch(context.Background(), mustMarshal(t, req), maxPayload))
}

func decodeReply(t *testing.T, b []byte) *agentpb.ControlResponse {
	t.Helper()
	resp := &agentpb.ControlResponse{}
	if err := proto.Unmarshal(b, resp); err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	return resp
}

func ping(id string, epoch uint32) *agentpb.ControlRequest {
	return &agentpb.ControlRequest{RequestId: id, Epoch: epoch, Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: 99}}}
}

func stat(id, path string) *agentpb.ControlRequest {
	return &agentpb.ControlRequest{RequestId: id, Op: &agentpb.ControlRequest_FsStat{FsStat: &agentpb.FsStatRequest{Path: path}}}
}

func TestDispatchRules(t *testing.T) {
	unknownOp := protowire.AppendTag(nil, 1, protowire.BytesType)
	unknownOp = protowire.AppendString(unknownOp, "req-u")
	unknownOp = protowire.AppendTag(unknownOp, 40, protowire.BytesType)
	unknownOp = protowire.AppendBytes(unknownOp, []byte{0x08, 0x01})

	tests := []struct {
		name       string
		raw        []byte
		req        *agentpb.ControlRequest
		maxPayload int
		wantID     string
		wantCode   agentpb.ErrorCode
		wantRetry  bool
		wantMsg    string
		check      func(*testing.T, *agentpb.ControlResponse)
	}{
		{name: "undecodable bytes", raw: []byte{0xff, 0xff, 0xff, 0xff}, wantCode: agentpb.ErrorCode_ERROR_CODE_PROTOCOL, wantMsg: "undecodable ControlRequest"},
		{name: "empty op", req: &agentpb.ControlRequest{RequestId: "req-e"}, wantID: "req-e", wantCode: agentpb.ErrorCode_ERROR_CODE_PROTOCOL, wantMsg: "carried no op"},
		{name: "op of a newer revision", raw: unknownOp, wantID: "req-u", wantCode: agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, wantMsg: "op field 40"},
		{name: "known op not served", req: &agentpb.ControlRequest{RequestId: "req-p", Op: &agentpb.ControlRequest_PtyOpen{PtyOpen: &agentpb.PtyOpenRequest{}}}, wantID: "req-p", wantCode: agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, wantMsg: "pty_open"},
		{name: "agent-initiated op inbound", req: &agentpb.ControlRequest{RequestId: "req-h", Op: &agentpb.ControlRequest_Hello{Hello: &agentpb.Hello{}}}, wantID: "req-h", wantCode: agentpb.ErrorCode_ERROR_CODE_PROTOCOL, wantMsg: "agent-initiated"},
		{name: "stale epoch fenced", req: ping("req-f", 4), wantID: "req-f", wantCode: agentpb.ErrorCode_ERROR_CODE_FENCED, wantRetry: true, wantMsg: "op epoch 4 is older than held epoch 5",
			check: func(t *testing.T, r *agentpb.ControlResponse) {
				if d := r.GetError().GetDetail(); d["op_epoch"] != "4" || d["held_epoch"] != "5" {
					t.Errorf("detail = %v", d)
				}
			}},
		{name: "equal epoch accepted", req: ping("req-5", 5), wantID: "req-5"},
		{name: "newer epoch accepted", req: ping("req-6", 6), wantID: "req-6"},
		{name: "epoch 0 never fenced", req: ping("req-0", 0), wantID: "req-0",
			check: func(t *testing.T, r *agentpb.ControlResponse) {
				if r.GetPing().GetNonce() != 99 {
					t.Errorf("nonce not echoed: %v", r)
				}
			}},
		{name: "handler error maps to NOT_FOUND", req: stat("req-m", "missing"), wantID: "req-m", wantCode: agentpb.ErrorCode_ERROR_CODE_NOT_FOUND},
		{name: "handler panic is contained", req: stat("req-x", "panic"), wantID: "req-x", wantCode: agentpb.ErrorCode_ERROR_CODE_OS, wantMsg: "internal error"},
		{name: "reply over max payload", req: stat("req-b", "big"), maxPayload: 1024, wantID: "req-b", wantCode: agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, wantMsg: "reply for op 'fs_stat'",
			check: func(t *testing.T, r *agentpb.ControlResponse) {
				if d := r.GetError().GetDetail(); d["op"] != "fs_stat" || d["max_payload"] != "1024" || d["encoded_bytes"] == "" {
					t.Errorf("detail = %v", d)
				}
				if r.GetResult() != nil {
					t.Error("an error reply must carry no result")
				}
			}},
		{name: "reply under max payload passes", req: stat("req-s", "small"), maxPayload: 1024, wantID: "req-s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDispatcher(4)
			d.SetHeldEpoch(5)
			raw := tt.raw
			if raw == nil {
				var err error
				if raw, err = proto.Marshal(tt.req); err != nil {
					t.Fatal(err)
				}
			}
			out := d.Dispatch(context.Background(), raw, tt.maxPayload)
			if tt.maxPayload > 0 && len(out) > tt.maxPayload {
				t.Fatalf("reply of %d bytes over max payload %d", len(out), tt.maxPayload)
			}
			resp := decodeReply(t, out)
			if resp.GetRequestId() != tt.wantID {
				t.Errorf("request_id = %q, want %q", resp.GetRequestId(), tt.wantID)
			}
			if got := resp.GetError().GetCode(); got != tt.wantCode {
				t.Fatalf("code = %v, want %v (%v)", got, tt.wantCode, resp.GetError())
			}
			if tt.wantCode == 0 && resp.GetResult() == nil {
				t.Fatal("success without a result")
			}
			if resp.GetError().GetRetryable() != tt.wantRetry {
				t.Errorf("retryable = %v", resp.GetError().GetRetryable())
			}
			if !strings.Contains(resp.GetError().GetMessage(), tt.wantMsg) {
				t.Errorf("message %q does not contain %q", resp.GetError().GetMessage(), tt.wantMsg)
			}
			if tt.check != nil {
				tt.check(t, resp)
			}
		})
	}
}

func TestDrainingRefusesNewOpsWhileInFlightFinish(t *testing.T) {
	d := NewDispatcher(nil, 4)
	release := make(chan struct{})
	entered := make(chan struct{})
	Handle(d, "fs_stat", Heavy, func(context.Context, *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
		close(entered)
		<-release
		return &agentpb.FsStatResponse{Exists: true}, nil
	})
	inflight := make(chan *agentpb.ControlResponse)
	go func() {
		b, _ := proto.Marshal(stat("req-slow", "x"))
		r := &agentpb.ControlResponse{}
		_ = proto.Unmarshal(d.Dispatch(context.Background(), b, 0), r)
		inflight <- r
	}()
	<-entered
	d.BeginDrain()
	if r := roundTrip(t, d, ping("req-new", 0), 0); r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_DRAINING || !r.GetError().GetRetryable() {
		t.Fatalf("new op while draining: %v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := d.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait returned %v while an op is in flight", err)
	}
	cancel()
	close(release)
	if r := <-inflight; r.GetError() != nil || !r.GetFsStat().GetExists() {
		t.Fatalf("in-flight op did not finish normally: %v", r)
	}
	if err := d.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLightOpsBypassSaturatedSlots(t *testing.T) {
	d := NewDispatcher(nil, 1)
	release := make(chan struct{})
	defer close(release)
	entered := make(chan struct{}, 1)
	Handle(d, "fs_stat", Heavy, func(context.Context, *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
		entered <- struct{}{}
		<-release
		return &agentpb.FsStatResponse{}, nil
	})
	Handle(d, "ping", Light, func(_ context.Context, r *agentpb.PingRequest) (*agentpb.PingResponse, error) {
		return &agentpb.PingResponse{Nonce: r.GetNonce()}, nil
	})
	b, _ := proto.Marshal(stat("req-slow", "x"))
	go d.Dispatch(context.Background(), b, 0)
	<-entered // the only heavy slot is taken
	if r := roundTrip(t, d, ping("req-p", 0), 0); r.GetPing().GetNonce() != 99 {
		t.Fatalf("ping while heavy slots are full: %v", r)
	}
	// A second heavy op waits for a slot; its context ending answers TIMEOUT.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r := decodeReply(t, d.Dispatch(ctx, b, 0))
	if r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_TIMEOUT {
		t.Fatalf("heavy op with no slot: %v", r)
	}
}

func TestHandleRejectsMiswiring(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	d := NewDispatcher(nil, 1)
	h := func(context.Context, *agentpb.PingRequest) (*agentpb.PingResponse, error) { return nil, nil }
	mustPanic("unknown op", func() { Handle(d, "teleport", Light, h) })
	mustPanic("wrong types", func() { Handle(d, "exec", Light, h) })
	Handle(d, "ping", Light, h)
	mustPanic("duplicate", func() { Handle(d, "ping", Light, h) })
}

func TestNilResponseBecomesEmptyResult(t *testing.T) {
	d := NewDispatcher(nil, 1)
	Handle(d, "fs_mkdir", Heavy, func(context.Context, *agentpb.FsMkdirRequest) (*agentpb.FsMkdirResponse, error) {
		return nil, nil
	})
	r := roundTrip(t, d, &agentpb.ControlRequest{RequestId: "r", Op: &agentpb.ControlRequest_FsMkdir{FsMkdir: &agentpb.FsMkdirRequest{}}}, 0)
	if r.GetError() != nil || r.GetFsMkdir() == nil {
		t.Fatalf("want an empty fs_mkdir result, got %v", r)
	}
}

// FuzzDispatch: any bytes give a decodable reply within the max payload, and
// never a panic.
func FuzzDispatch(f *testing.F) {
	for _, r := range []*agentpb.ControlRequest{ping("a", 0), ping("b", 3), stat("c", "missing"), stat("d", "big"), stat("e", "panic"), {}} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff})
	d := newTestDispatcher(2)
	d.SetHeldEpoch(2)
	f.Fuzz(func(t *testing.T, data []byte) {
		out := d.Dispatch(context.Background(), data, 2048)
		if len(out) > 2048 {
			t.Fatalf("reply %d bytes over max payload", len(out))
		}
		resp := &agentpb.ControlResponse{}
		if err := proto.Unmarshal(out, resp); err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		if resp.GetError() == nil && resp.GetResult() == nil {
			t.Fatal("reply has neither error nor result")
		}
	})
}

func TestAcceptMarksInlineOps(t *testing.T) {
	d := NewDispatcher(nil, 1)
	Handle(d, "ping", Inline, func(_ context.Context, r *agentpb.PingRequest) (*agentpb.PingResponse, error) {
		return &agentpb.PingResponse{}, nil
	})
	Handle(d, "fs_stat", Heavy, func(context.Context, *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
		return &agentpb.FsStatResponse{}, nil
	})
	enc := func(r *agentpb.ControlRequest) []byte { b, _ := proto.Marshal(r); return b }
	tests := []struct {
		name string
		data []byte
		want bool
	}{
		{"ping with id and epoch", enc(ping("req-1", 9)), true},
		{"heavy op", enc(stat("req-2", "x")), false},
		{"no op", enc(&agentpb.ControlRequest{RequestId: "x"}), false},
		{"garbage", []byte{0xff, 0xff}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		r := d.Accept(tt.data)
		if got := r.Inline(); got != tt.want {
			t.Errorf("%s: Inline = %v, want %v", tt.name, got, tt.want)
		}
		d.Serve(context.Background(), r, 0)
	}
	if d.Active() != 0 {
		t.Fatalf("%d requests still active", d.Active())
	}
}

// Writes to one path run one at a time in acceptance order, even when they
// are served concurrently; other paths are not held up.
func TestOrderedOpsRunInAcceptanceOrder(t *testing.T) {
	d := NewDispatcher(nil, 8)
	var mu sync.Mutex
	var applied []string
	gate := make(chan struct{})
	Handle(d, "fs_write", Heavy, func(_ context.Context, r *agentpb.FsWriteRequest) (*agentpb.FsWriteResponse, error) {
		if string(r.GetContent()) == "0" {
			<-gate // the first write is slow
		}
		mu.Lock()
		applied = append(applied, r.GetPath()+":"+string(r.GetContent()))
		mu.Unlock()
		return &agentpb.FsWriteResponse{BytesWritten: uint64(len(r.GetContent()))}, nil
	})
	OrderBy(d, "fs_write", func(r *agentpb.FsWriteRequest) string { return r.GetPath() })
	write := func(path, content string) []byte {
		b, _ := proto.Marshal(&agentpb.ControlRequest{RequestId: content, Op: &agentpb.ControlRequest_FsWrite{FsWrite: &agentpb.FsWriteRequest{Path: path, Content: []byte(content), Append: true}}})
		return b
	}
	var reqs []*Request
	for i := 0; i < 5; i++ {
		reqs = append(reqs, d.Accept(write("a", strconv.Itoa(i))))
	}
	other := d.Accept(write("b", "x"))
	var wg sync.WaitGroup
	for i := len(reqs) - 1; i >= 0; i-- { // served in reverse: order must still hold
		wg.Add(1)
		go func(r *Request) { defer wg.Done(); d.Serve(context.Background(), r, 0) }(reqs[i])
	}
	// A write to another path is not queued behind the slow one.
	d.Serve(context.Background(), other, 0)
	mu.Lock()
	if len(applied) != 1 || applied[0] != "b:x" {
		t.Fatalf("applied before the gate opened: %v", applied)
	}
	mu.Unlock()
	close(gate)
	wg.Wait()
	if got := strings.Join(applied, ","); got != "b:x,a:0,a:1,a:2,a:3,a:4" {
		t.Fatalf("applied %s", got)
	}
	if len(d.tails) != 0 {
		t.Fatalf("order tails leaked: %v", d.tails)
	}
}
