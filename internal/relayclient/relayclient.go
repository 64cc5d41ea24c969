// Package relayclient is the client side of the relay handshake (relay.md
// §4, §7): dial the stream URL, send one StreamOpen, and read the relay's
// StreamOpenAck. The agent's producer channels (agent/stream) and the
// control library's viewers (control) both open through Open, so a relay
// refusal is one typed error whichever side met it.
package relayclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/coder/websocket"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

// ErrClosedBeforeAck is a transport error: the relay closed the socket
// before answering the StreamOpen.
var ErrClosedBeforeAck = errors.New("relay closed before ack")

// RejectedError is a StreamOpenAck{accepted:false}: a bad, expired or
// out-of-scope token, or a stale epoch. Retrying the same open cannot fix it.
type RejectedError struct{ Message string }

func (e *RejectedError) Error() string { return "relay rejected the stream open: " + e.Message }

// ProtocolError is a first answer that is not a decodable StreamOpenAck.
type ProtocolError struct{ Detail string }

func (e *ProtocolError) Error() string { return "relay protocol error: " + e.Detail }

// Open dials url, sends open and waits for the relay's ack, all within ctx
// (callers bound it with their handshake timeout). It returns the live
// socket, its read limit set to frame.MaxMessageSize, and the accepted ack.
// A refusal is a *RejectedError, a wrong answer a *ProtocolError; any
// other error is a transport failure worth retrying. On error the socket
// is closed.
func Open(ctx context.Context, url string, httpClient *http.Client, open *agentpb.StreamOpen) (*websocket.Conn, *agentpb.StreamOpenAck, error) {
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: httpClient})
	if err != nil {
		return nil, nil, fmt.Errorf("relay dial: %w", err)
	}
	ws.SetReadLimit(frame.MaxMessageSize)
	ack, err := handshake(ctx, ws, open)
	if err != nil {
		ws.CloseNow()
		return nil, nil, err
	}
	return ws, ack, nil
}

func handshake(ctx context.Context, ws *websocket.Conn, open *agentpb.StreamOpen) (*agentpb.StreamOpenAck, error) {
	if err := frame.WriteFrame(ctx, ws, open); err != nil {
		return nil, fmt.Errorf("relay send open: %w", err)
	}
	tag, m, err := frame.ReadFrame(ctx, ws)
	if err != nil {
		if tag != 0 { // a known tag whose body does not decode
			return nil, &ProtocolError{Detail: err.Error()}
		}
		if errors.Is(err, io.EOF) || websocket.CloseStatus(err) != -1 {
			err = ErrClosedBeforeAck
		}
		return nil, fmt.Errorf("relay await ack: %w", err)
	}
	ack, ok := m.(*agentpb.StreamOpenAck)
	if !ok {
		return nil, &ProtocolError{Detail: "expected StreamOpenAck, got " + tag.String()}
	}
	if !ack.GetAccepted() {
		msg := ack.GetError().GetMessage()
		if msg == "" {
			msg = "rejected"
		}
		return nil, &RejectedError{Message: msg}
	}
	return ack, nil
}

// IsRefusal reports a relay answer that retrying the same open cannot fix:
// a *RejectedError or a *ProtocolError.
func IsRefusal(err error) bool {
	var rej *RejectedError
	var perr *ProtocolError
	return errors.As(err, &rej) || errors.As(err, &perr)
}
