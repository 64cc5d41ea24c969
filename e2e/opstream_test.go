package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// opCounter is an agent Observer counting the ops it answered, by name.
type opCounter struct {
	mu  sync.Mutex
	ops map[string]int
}

func (c *opCounter) ObserveOp(_ *agentpb.ControlRequest, _ *agentpb.ControlResponse, op string, _ time.Time, _ time.Duration, _, _ int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ops == nil {
		c.ops = map[string]int{}
	}
	c.ops[op]++
}

func (c *opCounter) ObservePause(bool, time.Time) {}

func (c *opCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.ops
	c.ops = nil
	return m
}

// capsResolver routes to the agent's live instance and knows its Hello's
// capabilities, as the platform's store does.
type capsResolver struct{ a *agent.Agent }

func (r capsResolver) LiveInstance(context.Context, string, string) (string, error) {
	return r.a.Instance(), nil
}

func (r capsResolver) OffersOpStream(context.Context, string, string) (bool, error) {
	return r.a.Hello().GetCapabilities().GetOpStream(), nil
}

// progressLog records Progress calls and checks they never go back.
type progressLog struct {
	t          *testing.T
	done, last int64
	calls      int
}

func (p *progressLog) update(done, total int64) {
	if done < p.done {
		p.t.Errorf("progress went back: %d after %d", done, p.done)
	}
	p.done, p.last = done, total
	p.calls++
}

// ReadFileAll and WriteFileAll go over op-stream when the machine offers
// it and over the v1 ops otherwise (an agent with op-stream off, known
// from its Hello or learnt from its UNSUPPORTED answer), with the same
// bytes and progress either way.
func TestWholeFileTransfersFollowOpStreamOffer(t *testing.T) {
	cases := []struct {
		name       string
		noOpStream bool // the agent's
		knowsCaps  bool // the resolver knows the Hello's capabilities
		want, not  []string
	}{
		{"offered", false, true, []string{"op_start", "write_chunk"}, []string{"fs_read", "fs_write"}},
		{"off in hello", true, true, []string{"fs_read", "fs_write", "fs_move"}, []string{"op_start"}},
		{"off, caps unknown", true, false, []string{"op_start", "fs_read", "fs_write", "fs_move"}, []string{"write_chunk"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obs := &opCounter{}
			e := newEnv(t, nil, func(o *agent.Options) { o.NoOpStream, o.Observer = tc.noOpStream, obs })
			s := e.session(t, func(c *control.SessionConfig) {
				c.Instances = control.InstanceResolverFunc(func(context.Context, string, string) (string, error) { return e.agent.Instance(), nil })
				if tc.knowsCaps {
					c.Instances = capsResolver{e.agent}
				}
			})
			ctx := ctxT(t)
			// Without the capabilities a live instance is tried.
			if got, want := s.UsesOpStream(ctx), !tc.noOpStream || !tc.knowsCaps; got != want {
				t.Fatalf("UsesOpStream = %v, want %v", got, want)
			}
			obs.take()

			data := make([]byte, 3<<20+12345) // several chunks either way, the last one short
			rand.Read(data)
			up := &progressLog{t: t}
			n, err := s.WriteFileAll(ctx, "dir/big.bin", bytes.NewReader(data), int64(len(data)), &control.TransferOptions{Progress: up.update})
			if err != nil || n != int64(len(data)) {
				t.Fatalf("WriteFileAll = %d, %v", n, err)
			}
			if up.done != int64(len(data)) || up.last != int64(len(data)) || up.calls < 2 {
				t.Errorf("upload progress ended at %d/%d after %d calls", up.done, up.last, up.calls)
			}
			if got, err := os.ReadFile(filepath.Join(e.root, "dir/big.bin")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the machine's file differs (%d bytes, %v)", len(got), err)
			}
			var buf bytes.Buffer
			down := &progressLog{t: t}
			n, err = s.ReadFileAll(ctx, "dir/big.bin", &buf, &control.TransferOptions{Progress: down.update})
			if err != nil || n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("ReadFileAll = %d, %v (equal %v)", n, err, bytes.Equal(buf.Bytes(), data))
			}
			if down.done != int64(len(data)) || down.last != int64(len(data)) || down.calls < 2 {
				t.Errorf("download progress ended at %d/%d after %d calls", down.done, down.last, down.calls)
			}
			ops := obs.take()
			for _, op := range tc.want {
				if ops[op] == 0 {
					t.Errorf("the agent answered no %s: %v", op, ops)
				}
			}
			for _, op := range tc.not {
				if ops[op] != 0 {
					t.Errorf("the agent answered %d %s: %v", ops[op], op, ops)
				}
			}
		})
	}
}

// A source shorter than the size it was announced with fails the upload
// over op-stream, and nothing is renamed into place.
func TestWriteFileAllShortSourceRenamesNothing(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, func(c *control.SessionConfig) { c.Instances = capsResolver{e.agent} })
	ctx := ctxT(t)
	data := make([]byte, 1<<20)
	_, err := s.WriteFileAll(ctx, "short.bin", bytes.NewReader(data), int64(len(data))+1, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("WriteFileAll of a short source = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := os.Stat(filepath.Join(e.root, "short.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("short.bin exists after a failed upload: %v", err)
	}
}
