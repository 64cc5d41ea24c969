package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

type seenOp struct {
	req      *agentpb.ControlRequest
	resp     *agentpb.ControlResponse
	op       string
	in, out  int
	tookSane bool
}

type recordingObserver struct {
	mu  sync.Mutex
	ops []seenOp
}

func (r *recordingObserver) ObserveOp(req *agentpb.ControlRequest, resp *agentpb.ControlResponse, op string, start time.Time, took time.Duration, in, out int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, seenOp{req, resp, op, in, out, !start.IsZero() && took >= 0})
}

func (r *recordingObserver) ObservePause(bool, time.Time) {}

// The dispatcher tells its observer about every answer, refusals and
// undecodable requests included, with the encoded sizes; a paused
// dispatcher refuses everything but ping and metrics.
func TestDispatcherObservesEveryAnswer(t *testing.T) {
	obs := &recordingObserver{}
	d := NewDispatcher(nil, 1)
	d.SetObserver(obs)
	paused := false
	d.SetPause(func() PauseState { return PauseState{Paused: paused} })
	Handle(d, "ping", Inline, func(_ context.Context, r *agentpb.PingRequest) (*agentpb.PingResponse, error) {
		return &agentpb.PingResponse{Nonce: r.GetNonce()}, nil
	})
	Handle(d, "fs_stat", Heavy, func(context.Context, *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
		return &agentpb.FsStatResponse{Exists: true}, nil
	})
	stat := func(id string) []byte {
		return mustMarshal(t, &agentpb.ControlRequest{RequestId: id, Op: &agentpb.ControlRequest_FsStat{FsStat: &agentpb.FsStatRequest{Path: "x"}}})
	}
	ctx := context.Background()
	var outs [][]byte
	var ins []int
	serve := func(b []byte) {
		ins = append(ins, len(b))
		outs = append(outs, d.Dispatch(ctx, b, 0))
	}
	serve(stat("ok"))
	serve([]byte{0xff, 0xff, 0xff}) // undecodable
	paused = true
	serve(stat("paused"))
	serve(mustMarshal(t, &agentpb.ControlRequest{RequestId: "ping", Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{}}}))
	paused = false
	d.BeginDrain()
	serve(stat("draining"))

	want := []struct {
		op   string
		code agentpb.ErrorCode
	}{
		{"fs_stat", agentpb.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{"none", agentpb.ErrorCode_ERROR_CODE_PROTOCOL},
		{"fs_stat", agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED},
		{"ping", agentpb.ErrorCode_ERROR_CODE_UNSPECIFIED},
		{"fs_stat", agentpb.ErrorCode_ERROR_CODE_DRAINING},
	}
	if len(obs.ops) != len(want) {
		t.Fatalf("observed %d answers, want %d", len(obs.ops), len(want))
	}
	for i, w := range want {
		got := obs.ops[i]
		if got.op != w.op || got.resp.GetError().GetCode() != w.code || got.in != ins[i] || got.out != len(outs[i]) || !got.tookSane {
			t.Errorf("answer %d: op %s code %v in %d out %d; want %s %v %d %d", i, got.op, got.resp.GetError().GetCode(), got.in, got.out,
				w.op, w.code, ins[i], len(outs[i]))
		}
	}
	if obs.ops[1].req != nil {
		t.Error("an undecodable request is observed as nil")
	}
	if e := obs.ops[2].resp.GetError(); e.GetDetail()["reason"] != "paused" || e.GetRetryable() {
		t.Errorf("pause refusal %v", e)
	}
}
