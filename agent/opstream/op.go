package opstream

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// errCancelled is the cause of an op's context when OpCancel ended it;
// errDeadline when its deadline did; errStopping when the agent stops.
var (
	errCancelled = errors.New("op cancelled")
	errDeadline  = errors.New("op deadline passed")
	errStopping  = errors.New("agent stopping")
)

// frame is one published OpFrame, kept encoded until acked so a reattach
// replays exactly the bytes that went out.
type frame struct {
	seq  uint64
	enc  []byte
	data uint64 // data bytes it carries (counted against credit)
	pool bool   // enc came from framePool
}

// op is one op-stream op: its frame log (retained until acked), its credit
// and its state. Frames get consecutive seqs from 1; every frame is
// published as it is appended and again on a reattach.
type op struct {
	id   string
	kind string
	svc  *Service
	ctx  context.Context

	cancel context.CancelCauseFunc

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every ack, attach or end
	state    agentpb.OpState
	nextSeq  uint64
	frames   []frame // seq ascending, all > ackedSeq
	retained uint64  // data bytes in frames
	ackedSeq uint64
	acked    uint64 // data bytes in frames dropped by acks
	produced uint64 // data bytes appended
	credit   uint64 // absolute: data may be appended while produced < credit
	window   uint64
	gen      uint64 // attach generation; acks of an older one are stale
	exit     *agentpb.OpExit
	started  time.Time
	finished bool   // final ack received
	write    *write // fs_write ops
}

func (o *op) signal() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// limit is how far data may be produced: the consumer's credit, never more
// than MaxWindow beyond what was acked (what a slow or absent consumer can
// make the agent hold).
func (o *op) limit() uint64 { return min(o.credit, o.acked+MaxWindow) }

// reserve waits until data may be appended and returns how many bytes (at
// most want) fit the credit now. Only one producer of an op may use
// reserve+appendEncoded (fs_read); concurrent producers use appendData.
func (o *op) reserve(want int) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.produced >= o.limit() {
		ch := o.changed
		o.mu.Unlock()
		select {
		case <-ch:
		case <-o.ctx.Done():
			o.mu.Lock()
			return 0, context.Cause(o.ctx)
		}
		o.mu.Lock()
	}
	return int(min(uint64(want), o.limit()-o.produced)), nil
}

// appendData appends b as data frames of channel ch, waiting for credit;
// it never drops a byte: it returns only when all of b is appended or the
// op ended (the error).
func (o *op) appendData(ch agentpb.OpChannel, b []byte) error {
	for len(b) > 0 {
		o.mu.Lock()
		for o.produced >= o.limit() {
			wait := o.changed
			o.mu.Unlock()
			select {
			case <-wait:
			case <-o.ctx.Done():
				return context.Cause(o.ctx)
			}
			o.mu.Lock()
		}
		n := int(min(uint64(min(len(b), MaxFrameData)), o.limit()-o.produced))
		seq := o.nextSeq
		enc := appendDataFrame(getFrameBuf(n), o.id, seq, ch, b[:n])
		o.appendLocked(frame{seq: seq, enc: enc, data: uint64(n), pool: true})
		o.mu.Unlock()
		b = b[n:]
	}
	return nil
}

// appendEncoded appends a data frame encoded in enc for seq (fs_read reads
// straight into it), carrying its last n bytes as data. A progress frame
// may have taken seq meanwhile; then the frame is encoded again.
func (o *op) appendEncoded(seq uint64, enc []byte, ch agentpb.OpChannel, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if seq != o.nextSeq {
		data := enc[len(enc)-n:]
		enc2 := appendDataFrame(getFrameBuf(n), o.id, o.nextSeq, ch, data)
		putFrameBuf(enc)
		enc = enc2
	}
	o.appendLocked(frame{seq: o.nextSeq, enc: enc, data: uint64(n), pool: true})
}

func timeSince(o *op) time.Duration { return time.Since(o.started) }

// appendBody appends a progress or exit frame; these carry no data and
// need no credit.
func (o *op) appendBody(f *agentpb.OpFrame) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.appendBodyLocked(f)
}

func (o *op) appendBodyLocked(f *agentpb.OpFrame) {
	f.OpId, f.Seq = o.id, o.nextSeq
	enc, _ := proto.Marshal(f)
	o.appendLocked(frame{seq: f.Seq, enc: enc})
}

func (o *op) appendLocked(f frame) {
	o.nextSeq++
	o.produced += f.data
	o.retained += f.data
	o.frames = append(o.frames, f)
	o.svc.publish(o, f.enc)
}

// ackLocked drops frames up to seq (the consumer has them).
func (o *op) ackLocked(seq uint64) {
	i := 0
	for ; i < len(o.frames) && o.frames[i].seq <= seq; i++ {
		f := o.frames[i]
		o.acked += f.data
		o.retained -= f.data
		if f.pool {
			putFrameBuf(f.enc)
		}
		o.frames[i] = frame{}
	}
	o.frames = o.frames[i:]
	if seq > o.ackedSeq {
		o.ackedSeq = min(seq, o.nextSeq-1)
	}
}

// status is the op's OpStatus now.
func (o *op) status() *agentpb.OpStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	return &agentpb.OpStatus{OpId: o.id, State: o.state, NextSeq: o.nextSeq, Exit: o.exit}
}

// end records how the op ended and appends its exit frame.
func (o *op) end(exit *agentpb.OpExit) {
	if f := o.svc.opts.OnEnd; f != nil {
		f(o.id, o.kind, exit)
	}
	o.cancel(nil)
	// In the completed store before anyone can see it complete, so its
	// bound holds for whoever looks.
	o.svc.completed(o)
	// The exit frame goes out under the same lock that marks the op
	// complete: whoever has seen the frame finds the op complete.
	o.mu.Lock()
	o.state = agentpb.OpState_OP_STATE_COMPLETE
	o.exit = exit
	o.appendBodyLocked(&agentpb.OpFrame{Body: &agentpb.OpFrame_Exit{Exit: exit}})
	o.signal()
	o.mu.Unlock()
}

// progress appends a progress frame every interval until the op ends.
func (o *op) progress(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-o.ctx.Done():
			return
		case <-t.C:
			// Progress is liveness for a consumer that is caught up; one
			// that is behind or gone has frames to take already, and
			// retaining a progress frame per interval for it would grow
			// without bound.
			o.mu.Lock()
			idle := len(o.frames) == 0
			o.mu.Unlock()
			if idle {
				o.appendBody(&agentpb.OpFrame{Body: &agentpb.OpFrame_Progress{Progress: &agentpb.OpProgress{}}})
			}
		}
	}
}

// Field numbers of OpFrame and OpData (proto/agent/opengeni_agent.proto).
const (
	frameOpID  = 1
	frameSeq   = 2
	frameData  = 10
	dataChan   = 1
	dataBytes  = 2
	frameSlack = 256 // header room of a data frame beyond its data and op id
)

// dataHeader appends an OpFrame's header for a data body of n bytes; the
// n data bytes follow it directly. Hand-encoded so data is copied once
// (straight from the pipe or the file into the frame).
func dataHeader(b []byte, id string, seq uint64, ch agentpb.OpChannel, n int) []byte {
	b = protowire.AppendTag(b, frameOpID, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, frameSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, seq)
	inner := 1 + protowire.SizeVarint(uint64(ch)) + 1 + protowire.SizeBytes(n)
	b = protowire.AppendTag(b, frameData, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	b = protowire.AppendTag(b, dataChan, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(ch))
	b = protowire.AppendTag(b, dataBytes, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}

func appendDataFrame(b []byte, id string, seq uint64, ch agentpb.OpChannel, data []byte) []byte {
	return append(dataHeader(b, id, seq, ch, len(data)), data...)
}

// frameClasses are the capacities of pooled data frame buffers: a full
// frame, and a half one (a pipe hands 64 KiB at a time, and a window of
// such frames in full-size buffers would hold twice the window). Smaller
// frames get a buffer of their own size.
var frameClasses = [...]int{MaxFrameData/2 + frameSlack + 128, MaxFrameData + frameSlack + 128}

// framePools recycle data frame buffers once acked, one free list per
// class: a producer blocked on credit reuses what the consumer's ack freed.
// They are bounded (not a sync.Pool, which the GC counts as live for a
// cycle and so doubles the heap a window of frames costs).
var framePools = [len(frameClasses)]chan []byte{make(chan []byte, maxPooledFrames), make(chan []byte, maxPooledFrames/2)}

// maxPooledFrames bounds the half-size free list (2 MiB); the full-size
// one holds half as many.
const maxPooledFrames = 32

// getFrameBuf returns an empty buffer for a data frame of n data bytes.
func getFrameBuf(n int) []byte {
	need := n + frameSlack + 128 // the data, the header, an op id of up to 128 bytes
	for i, c := range frameClasses {
		if need > c {
			continue
		}
		if need*4 < c {
			break // a pooled buffer would be mostly waste
		}
		select {
		case b := <-framePools[i]:
			return b
		default:
			return make([]byte, 0, c)
		}
	}
	return make([]byte, 0, need)
}

func putFrameBuf(b []byte) {
	for i, c := range frameClasses {
		if cap(b) == c {
			select {
			case framePools[i] <- b[:0]:
			default: // enough kept; the GC takes it
			}
			return
		}
	}
}
