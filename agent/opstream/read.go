package opstream

import (
	"encoding/hex"
	"io"
	"os"

	"github.com/zeebo/blake3"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// startRead opens the file now (a missing file is the OpStart's error) and
// returns what streams [offset, offset+length) as content frames, read
// straight into the frames (one copy), as fast as credit allows.
func (s *Service) startRead(o *op, req *agentpb.FsReadRequest) (func(), error) {
	if s.opts.Files == nil {
		return nil, agenterr.Unsupported("op_start fs_read is not served by this agent")
	}
	f, size, err := s.opts.Files.OpenRegular(req.GetPath())
	if err != nil {
		return nil, err
	}
	start := min(int64(req.GetOffset()), size)
	n := size - start
	if l := req.GetLength(); l > 0 {
		n = min(n, int64(l))
	}
	return func() {
		defer f.Close()
		exit := newExit()
		h := blake3.New()
		sent, err := s.streamFile(o, f, start, n, h)
		exit.Digests["content"] = hex.EncodeToString(h.Sum(nil))
		exit.Totals["content"] = uint64(sent)
		exit.DurationMs = uint64(timeSince(o).Milliseconds())
		if err != nil {
			if o.ctx.Err() != nil {
				failure(o.ctx, exit)
			} else {
				exit.FailureCode = FailureOS
				exit.FailureDetail = map[string]string{"error": err.Error()}
				exit.ExitCode = 1
			}
		}
		o.end(exit)
	}, nil
}

func (s *Service) streamFile(o *op, f *os.File, off, n int64, h io.Writer) (int64, error) {
	var sent int64
	for sent < n {
		want, err := o.reserve(int(min(n-sent, MaxFrameData)))
		if err != nil {
			return sent, err
		}
		seq := o.peekSeq()
		buf := dataHeader(getFrameBuf(want), o.id, seq, agentpb.OpChannel_OP_CHANNEL_CONTENT, want)
		hdr := len(buf)
		buf = buf[:hdr+want]
		m, err := f.ReadAt(buf[hdr:], off+sent)
		if m < want {
			putFrameBuf(buf)
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the file shrank while being read
			}
			return sent, agenterr.FromIO("read "+f.Name(), err)
		}
		h.Write(buf[hdr:])
		o.appendEncoded(seq, buf, agentpb.OpChannel_OP_CHANNEL_CONTENT, want)
		sent += int64(want)
	}
	return sent, nil
}

// peekSeq is the seq the next frame gets (the only producer asks).
func (o *op) peekSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nextSeq
}
