package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/quartz"
	"github.com/coder/websocket"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/relayclient"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

// ViewerOptions configure a relay viewer (role CLIENT).
type ViewerOptions struct {
	// URL is the viewer URL (BuildStreamURL of the machine's endpoint).
	URL string
	// Channel is the channel key; it must match the URL's query.
	Channel *agentpb.StreamChannel
	// Token returns an ogs_ token; it is called before every (re)connect,
	// since viewer tokens live two minutes.
	Token func(ctx context.Context) (string, error)
	// ResumeFrom is the first output seq wanted; 0 replays everything the
	// relay retains.
	ResumeFrom uint64

	OutputQueue      int           // output chunks buffered for the reader; default 256
	HandshakeTimeout time.Duration // dial + StreamOpen + ack; default 10s
	WriteTimeout     time.Duration // one input write; default 10s
	// ReconnectFor is how long a lost connection is retried (backoff 100 ms
	// doubling to 3 s) before the viewer gives up, and how long a channel
	// the relay keeps closing (reaped: no producer) may stay without output
	// before the viewer ends with that close; default 2 minutes.
	ReconnectFor time.Duration
	HTTPClient   *http.Client
	Logger       *slog.Logger
	// Clock times the reconnect backoff and ReconnectFor; nil is the real
	// clock (tests pass a quartz.Mock and advance it).
	Clock quartz.Clock
}

// ViewerStats count what a viewer saw.
type ViewerStats struct {
	Connects   uint64 // accepted opens, the first included
	OutNext    uint64 // the next output seq expected (the resume cursor)
	Bytes      uint64 // output bytes delivered
	Frames     uint64 // output frames delivered
	Duplicates uint64 // replayed output frames dropped (seq below the cursor)
	Gaps       uint64 // output seqs the relay no longer had on a resume
}

// StreamRejectedError is a StreamOpenAck{accepted:false}: a bad, expired or
// out-of-scope token, or a stale epoch. It is terminal. It is the agent's
// stream.RejectedError too: one type for the one wire event.
type StreamRejectedError = relayclient.RejectedError

// StreamClosedError says why a stream ended on the producer's or the relay's
// side: PROCESS_EXIT when the terminal's process exited, FENCED when a newer
// viewer or sandbox took over.
type StreamClosedError struct {
	Reason  agentpb.StreamCloseReason
	Message string
}

func (e *StreamClosedError) Error() string {
	return fmt.Sprintf("stream closed: %s %q", e.Reason, e.Message)
}

// ErrViewerClosed is returned by Send after Close or once the stream ended.
var ErrViewerClosed = errors.New("viewer closed")

// StreamViewer is a relay viewer: it delivers the channel's output in order
// and exactly once (a resume cursor across reconnects, duplicates dropped
// by seq) and sends input frames. A lost connection (a relay restart, a
// network change) is re-established with resume_from_seq = the next output
// seq wanted, so nothing is lost while the relay still retains it.
type StreamViewer struct {
	o   ViewerOptions
	log *slog.Logger

	out     chan []byte
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
	err     error // set before done

	mu      sync.Mutex
	ws      *websocket.Conn // nil while disconnected
	changed chan struct{}   // closed when ws changes
	stats   ViewerStats
	wmu     sync.Mutex // serializes writes
}

// DialStream connects a viewer and returns once the relay accepted it.
// Transport failures of the first connect are returned (the caller decides
// whether to retry); a rejected open is a *StreamRejectedError.
func DialStream(ctx context.Context, o ViewerOptions) (*StreamViewer, error) {
	if o.URL == "" || o.Channel == nil || o.Token == nil {
		return nil, errors.New("control: DialStream: URL, Channel and Token are required")
	}
	if o.OutputQueue <= 0 {
		o.OutputQueue = 256
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.ReconnectFor <= 0 {
		o.ReconnectFor = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Clock == nil {
		o.Clock = quartz.NewReal()
	}
	v := &StreamViewer{
		o:       o,
		log:     o.Logger.With("component", "viewer", "channel", o.Channel.GetChannelId()),
		out:     make(chan []byte, o.OutputQueue),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	v.stats.OutNext = o.ResumeFrom
	ws, err := v.connect(ctx)
	if err != nil {
		return nil, err
	}
	v.setConn(ws)
	go v.run(ws)
	return v, nil
}

// Output delivers the output, each byte once and in order. It is closed
// when the stream has ended (see Err).
func (v *StreamViewer) Output() <-chan []byte { return v.out }

// Done is closed when the stream has ended.
func (v *StreamViewer) Done() <-chan struct{} { return v.done }

// Err says why the stream ended: nil after Close, a *StreamClosedError
// when the producer or the relay ended it, a *StreamRejectedError or a
// transport error when reconnecting failed.
func (v *StreamViewer) Err() error {
	select {
	case <-v.done:
		return v.err
	default:
		return nil
	}
}

// Connected reports whether the viewer has a live relay connection.
func (v *StreamViewer) Connected() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ws != nil
}

// Stats returns the viewer's counters.
func (v *StreamViewer) Stats() ViewerStats {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stats
}

// Send writes data as one input frame (the relay stamps its seq). While the
// viewer is reconnecting it waits for the next connection (bounded by ctx).
// Input carries no acknowledgement: a frame written into a connection the
// relay has just dropped (before the viewer noticed) is lost, never
// repeated: input is not resent, so it never runs twice.
func (v *StreamViewer) Send(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	b := frame.MustEncode(&agentpb.StreamFrame{ChannelId: v.o.Channel.GetChannelId(), Data: data})
	for {
		v.mu.Lock()
		ws, changed := v.ws, v.changed
		v.mu.Unlock()
		if ws != nil {
			wctx, cancel := context.WithTimeout(ctx, v.o.WriteTimeout)
			v.wmu.Lock()
			err := ws.Write(wctx, websocket.MessageBinary, b)
			v.wmu.Unlock()
			cancel()
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ws.CloseNow() // the reader notices and reconnects; then retry
		}
		select {
		case <-changed:
		case <-v.done:
			return ErrViewerClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close detaches the viewer (a WebSocket close, no StreamClose: the channel
// and its replay ring stay for the next viewer) and waits for it to end.
func (v *StreamViewer) Close() error {
	v.once.Do(func() { close(v.closing) })
	v.mu.Lock()
	ws := v.ws
	v.mu.Unlock()
	if ws != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			go func() { <-ctx.Done(); ws.CloseNow() }()
			ws.Close(websocket.StatusNormalClosure, "")
		}()
	}
	<-v.done
	return nil
}

func (v *StreamViewer) setConn(ws *websocket.Conn) {
	v.mu.Lock()
	v.ws = ws
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
}

// connect dials the relay and opens as CLIENT, resuming at the cursor.
func (v *StreamViewer) connect(ctx context.Context) (*websocket.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, v.o.HandshakeTimeout)
	defer cancel()
	tok, err := v.o.Token(hctx)
	if err != nil {
		return nil, fmt.Errorf("viewer token: %w", err)
	}
	v.mu.Lock()
	resume := v.stats.OutNext
	v.mu.Unlock()
	open := &agentpb.StreamOpen{Channel: v.o.Channel, Token: tok, Role: agentpb.StreamRole_STREAM_ROLE_CLIENT, ResumeFromSeq: resume}
	ws, _, err := relayclient.Open(hctx, v.o.URL, v.o.HTTPClient, open)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.stats.Connects++
	v.mu.Unlock()
	return ws, nil
}

// run reads the live connection; on its loss it reconnects with backoff
// until ReconnectFor has passed without success.
func (v *StreamViewer) run(ws *websocket.Conn) {
	defer close(v.done)
	defer close(v.out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-v.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	lastOutput := v.o.Clock.Now() // the last output delivered, or the first connect
	for {
		frames := v.Stats().Frames
		terminal, err := v.read(ctx, ws)
		ws.CloseNow()
		v.setConn(nil)
		if ctx.Err() != nil {
			return // Close
		}
		if v.Stats().Frames != frames {
			lastOutput = v.o.Clock.Now()
		}
		if terminal || v.producerGone(err, lastOutput) {
			v.err = err
			return
		}
		v.log.Debug("relay connection lost; reconnecting", "err", err)
		ws, err = v.reconnect(ctx)
		if err != nil {
			if ctx.Err() == nil {
				v.err = err
			}
			return
		}
		v.setConn(ws)
	}
}

// producerGone reports whether a relay-made close (the channel reaped for
// want of a producer, or shed) ends the stream: it does once no output has
// arrived for ReconnectFor. A producer gone for good without its close
// reaching this viewer (e.g. lost in a relay restart) must not keep it
// reconnecting to an empty channel forever.
func (v *StreamViewer) producerGone(err error, lastOutput time.Time) bool {
	var closed *StreamClosedError
	return errors.As(err, &closed) && v.o.Clock.Since(lastOutput) >= v.o.ReconnectFor
}

func (v *StreamViewer) reconnect(ctx context.Context) (*websocket.Conn, error) {
	end := v.o.Clock.Now().Add(v.o.ReconnectFor)
	bo := backoff.Backoff{Policy: viewerBackoff, Clock: v.o.Clock}
	for {
		if err := bo.Sleep(ctx); err != nil {
			return nil, err
		}
		ws, err := v.connect(ctx)
		if err == nil {
			return ws, nil
		}
		var rej *StreamRejectedError
		if errors.As(err, &rej) || v.o.Clock.Now().After(end) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// viewerBackoff is the reconnect delay ceiling: 100 ms doubling to 3 s.
var viewerBackoff = backoff.Exponential(100*time.Millisecond, 3*time.Second)

// read serves one connection. It returns terminal=true when the stream
// ended for good (the producer or the relay closed it), false when the
// connection was lost or must be re-opened to fill a gap from the ring.
func (v *StreamViewer) read(ctx context.Context, ws *websocket.Conn) (terminal bool, err error) {
	delivered := false
	for {
		tag, m, err := frame.ReadFrame(ctx, ws)
		if err != nil {
			if tag != 0 {
				continue // an undecodable message of a known tag: ignored
			}
			return false, err
		}
		switch tag {
		case frame.TagFrame:
			f := m.(*agentpb.StreamFrame)
			v.mu.Lock()
			next := v.stats.OutNext
			if f.Seq < next {
				v.stats.Duplicates++
				v.mu.Unlock()
				continue
			}
			if f.Seq > next {
				if delivered {
					// Live frames were shed: resume from the relay's ring.
					v.mu.Unlock()
					return false, fmt.Errorf("output gap: expected seq %d, got %d", next, f.Seq)
				}
				v.stats.Gaps += f.Seq - next // the ring no longer has them
			}
			v.mu.Unlock()
			if len(f.Data) > 0 {
				select {
				case v.out <- f.Data:
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
			delivered = true
			v.mu.Lock()
			v.stats.OutNext = f.Seq + 1
			v.stats.Bytes += uint64(len(f.Data))
			v.stats.Frames++
			v.mu.Unlock()
		case frame.TagClose:
			cl := m.(*agentpb.StreamClose)
			err := &StreamClosedError{Reason: cl.GetReason(), Message: cl.GetMessage()}
			switch cl.GetReason() {
			case agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR,
				agentpb.StreamCloseReason_STREAM_CLOSE_REASON_RATE_LIMITED,
				agentpb.StreamCloseReason_STREAM_CLOSE_REASON_UNSPECIFIED:
				return false, err // fell behind, reaped: resume
			}
			return true, err
		}
	}
}
