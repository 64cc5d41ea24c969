package opstream

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	iofs "io/fs"
	"os"
	"strconv"
	"sync"

	"github.com/zeebo/blake3"

	"github.com/opengeni/opengeni-agent/agent/fs"
	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// write is the state of a chunked fs_write op: chunks land at their
// offsets in an op-scoped temp file, in any order and any number of times
// each; the last chunk's reply waits until every chunk 1..last is in, then
// the file is verified and renamed into place, once.
type write struct {
	staged       *fs.Staged
	expectedBase string

	mu      sync.Mutex
	changed chan struct{}
	chunks  map[uint64]struct{}
	lastSeq uint64 // 0 until the last chunk arrived
	size    int64
	// The content digest is taken as chunks arrive in offset order;
	// chunks ahead of the hashed prefix wait in pending (bounded), and a
	// write that outgrows it is hashed by reading the file back at commit.
	hash     hash.Hash
	hashed   int64
	pending  map[int64][]byte
	pendingN int
	rehash   bool
	ending   bool  // a commit (or abort) is under way
	ended    bool  // committed or failed for good
	result   error // the commit's outcome
}

func (w *write) signal() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (s *Service) startWrite(o *op, req *agentpb.FsWriteBegin) error {
	if s.opts.Files == nil {
		return agenterr.Unsupported("op_start fs_write is not served by this agent")
	}
	st, err := s.opts.Files.Stage(req.GetPath(), req.GetCreateParents(), req.GetMode())
	if err != nil {
		return err
	}
	o.write = &write{staged: st, expectedBase: req.GetExpectedBaseDigest(), changed: make(chan struct{}), chunks: map[uint64]struct{}{},
		hash: blake3.New(), pending: map[int64][]byte{}}
	return nil
}

// WriteChunk serves one chunk of a chunked fs_write: idempotent per (op,
// seq). Seqs count from 1; the chunk marked last ends the file at its
// offset plus its length, and its reply is the verdict of the whole write
// (the rename, or why nothing was renamed).
func (s *Service) WriteChunk(ctx context.Context, req *agentpb.WriteChunk) (*agentpb.WriteChunkAck, error) {
	o, st := s.find(req.GetOpId())
	if o == nil {
		return nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "write_chunk: op %s is lost (%s)", req.GetOpId(), st.GetLostReason())
	}
	w := o.write
	switch {
	case w == nil:
		return nil, agenterr.Invalid("write_chunk: op %s is a %s, not a chunked fs_write", o.id, o.kind)
	case req.GetSeq() == 0:
		return nil, agenterr.Invalid("write_chunk: seq counts from 1")
	case len(req.GetBytes()) > MaxChunk:
		return nil, agenterr.TooLarge(map[string]string{"chunk_bytes": strconv.Itoa(len(req.GetBytes())), "max_chunk": strconv.Itoa(MaxChunk)},
			"write_chunk: %d bytes is over the %d-byte chunk limit", len(req.GetBytes()), MaxChunk)
	}
	ack := &agentpb.WriteChunkAck{Seq: req.GetSeq()}
	w.mu.Lock()
	if _, dup := w.chunks[req.GetSeq()]; !dup {
		if w.ending || w.ended {
			err := w.result
			w.mu.Unlock()
			if err == nil {
				err = agenterr.Invalid("write_chunk: op %s already ended; chunk %d was never written", o.id, req.GetSeq())
			}
			return nil, err
		}
		if w.lastSeq != 0 && req.GetSeq() > w.lastSeq {
			w.mu.Unlock()
			return nil, agenterr.Invalid("write_chunk: seq %d is past the last chunk %d", req.GetSeq(), w.lastSeq)
		}
		w.mu.Unlock()
		if err := w.staged.WriteAt(req.GetBytes(), int64(req.GetOffset())); err != nil {
			return nil, err
		}
		w.mu.Lock()
		w.chunks[req.GetSeq()] = struct{}{}
		w.digest(int64(req.GetOffset()), req.GetBytes())
		w.signal()
	}
	if req.GetLast() {
		w.lastSeq = req.GetSeq()
		w.size = int64(req.GetOffset()) + int64(len(req.GetBytes()))
	}
	if req.GetSeq() != w.lastSeq {
		w.mu.Unlock()
		return ack, nil
	}
	// The last chunk: wait for the others, then commit once.
	for uint64(len(w.chunks)) < w.lastSeq && !w.ended {
		wait := w.changed
		w.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("write_chunk: waiting for the chunks before %d: %w", req.GetSeq(), ctx.Err())
		case <-o.ctx.Done():
			return nil, fmt.Errorf("write_chunk: %w", context.Cause(o.ctx))
		}
		w.mu.Lock()
	}
	if !w.ending {
		w.ending = true
		w.mu.Unlock()
		err := w.commit(o)
		w.mu.Lock()
		w.result, w.ended = err, true
		w.signal()
	}
	for !w.ended {
		wait := w.changed
		w.mu.Unlock()
		<-wait
		w.mu.Lock()
	}
	err := w.result
	w.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return ack, nil
}

// maxPendingHash bounds the chunk bytes held for the running digest.
const maxPendingHash = 16 << 20

// digest feeds a newly written chunk to the running digest (w.mu held).
func (w *write) digest(off int64, b []byte) {
	if w.rehash || off < w.hashed {
		w.rehash = true // an overlap or a rewrite: read the file back at commit
		return
	}
	if off > w.hashed {
		if w.pendingN+len(b) > maxPendingHash {
			w.rehash, w.pending, w.pendingN = true, nil, 0
			return
		}
		w.pending[off] = b
		w.pendingN += len(b)
		return
	}
	w.hash.Write(b)
	w.hashed += int64(len(b))
	for {
		next, ok := w.pending[w.hashed]
		if !ok {
			return
		}
		delete(w.pending, w.hashed)
		w.pendingN -= len(next)
		w.hash.Write(next)
		w.hashed += int64(len(next))
	}
}

// commit hashes the staged content, checks the base digest and renames;
// the op ends with the content digest and size, or the failure.
func (w *write) commit(o *op) error {
	exit := newExit()
	h := w.hash
	var err error
	if w.rehash || w.hashed != w.size || len(w.pending) > 0 {
		h = blake3.New()
		err = w.staged.Hash(h, w.size)
	}
	exit.Digests["content"] = hex.EncodeToString(h.Sum(nil))
	exit.Totals["content"] = uint64(w.size)
	if err == nil {
		err = w.staged.Commit(o.ctx, w.size, w.verifyBase)
	} else {
		w.staged.Abort()
	}
	exit.DurationMs = uint64(timeSince(o).Milliseconds())
	if err != nil {
		exit.ExitCode = 1
		exit.FailureCode = FailureOS
		var ae *agenterr.Error
		if errors.As(err, &ae) && ae.Detail["reason"] == "base_digest_mismatch" {
			exit.FailureCode = FailureDigest
		}
		exit.FailureDetail = map[string]string{"error": err.Error()}
	}
	o.end(exit)
	return err
}

// verifyBase holds the rename unless the file being replaced has the
// expected base digest (blake3 hex; "" checks nothing): the write was made
// against that content, and anything else is someone else's change.
func (w *write) verifyBase(target string) error {
	if w.expectedBase == "" {
		return nil
	}
	actual := "absent"
	f, err := os.Open(target)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
	case err != nil:
		return agenterr.FromIO("read "+target, err)
	default:
		h := blake3.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return agenterr.FromIO("read "+target, err)
		}
		actual = hex.EncodeToString(h.Sum(nil))
	}
	if actual != w.expectedBase {
		return &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_OS,
			Message: fmt.Sprintf("fs_write %s: the file changed: its digest is %s, the write expected base %s; nothing was renamed", target, actual, w.expectedBase),
			Detail:  map[string]string{"reason": "base_digest_mismatch", "expected": w.expectedBase, "actual": actual}}
	}
	return nil
}

// abort ends a write that was cancelled before its commit.
func (w *write) abort(o *op) {
	w.mu.Lock()
	if w.ending || w.ended {
		w.mu.Unlock()
		return
	}
	w.ending = true
	w.mu.Unlock()
	w.staged.Abort()
	exit := newExit()
	failure(o.ctx, exit)
	o.end(exit)
	w.mu.Lock()
	w.result, w.ended = fmt.Errorf("write_chunk: op %s: %w", o.id, context.Cause(o.ctx)), true
	w.signal()
	w.mu.Unlock()
}
