package relay

import (
	"bytes"
	"context"
	"sync"

	"github.com/coder/websocket"
)

var scratchPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readMessage reads one whole message into an exactly sized slice (the ring
// keeps it), using a pooled scratch buffer instead of io.ReadAll's repeated
// growth, and without keeping a buffer on idle connections.
func readMessage(ctx context.Context, c *websocket.Conn) (websocket.MessageType, []byte, error) {
	typ, r, err := c.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	buf := scratchPool.Get().(*bytes.Buffer)
	buf.Reset()
	_, err = buf.ReadFrom(r)
	var out []byte
	if err == nil {
		out = bytes.Clone(buf.Bytes())
		if out == nil {
			out = []byte{}
		}
	}
	if buf.Cap() <= 1<<20 { // do not pool huge buffers (desktop frames can be MiBs)
		scratchPool.Put(buf)
	}
	return typ, out, err
}
