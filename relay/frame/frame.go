// Package frame is the relay's wire framing: every relay message is one
// binary WebSocket message made of a tag byte followed by a proto3 body
// (spec relay.md §1.3). It is shared by the relay, the agent's relay client
// and the tests.
package frame

import (
	"context"
	"errors"
	"fmt"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Tag is the first byte of a relay message. The values are stable wire constants.
type Tag byte

// The five tags of relay.md §1.3.
const (
	TagOpen         Tag = 1 // StreamOpen
	TagOpenAck      Tag = 2 // StreamOpenAck
	TagFrame        Tag = 3 // StreamFrame
	TagClose        Tag = 4 // StreamClose
	TagDesktopInput Tag = 5 // DesktopInput
)

// MaxMessageSize is the largest relay message accepted (the reference's
// WebSocket default of 64 MiB).
const MaxMessageSize = 64 << 20

// String returns the tag's name as the reference relay prints it (used in
// "expected StreamOpen, got Frame").
func (t Tag) String() string {
	switch t {
	case TagOpen:
		return "Open"
	case TagOpenAck:
		return "OpenAck"
	case TagFrame:
		return "Frame"
	case TagClose:
		return "Close"
	case TagDesktopInput:
		return "DesktopInput"
	}
	return fmt.Sprintf("Tag(%d)", byte(t))
}

// Decode errors.
var (
	ErrEmpty       = errors.New("empty relay message")
	ErrUnknownTag  = errors.New("unknown relay message tag")
	ErrBadBody     = errors.New("relay message body does not decode")
	ErrUnknownType = errors.New("message type has no relay tag")
)

// TagOf returns the tag for one of the five relay message types.
func TagOf(m proto.Message) (Tag, error) {
	switch m.(type) {
	case *agentpb.StreamOpen:
		return TagOpen, nil
	case *agentpb.StreamOpenAck:
		return TagOpenAck, nil
	case *agentpb.StreamFrame:
		return TagFrame, nil
	case *agentpb.StreamClose:
		return TagClose, nil
	case *agentpb.DesktopInput:
		return TagDesktopInput, nil
	}
	return 0, fmt.Errorf("%w: %T", ErrUnknownType, m)
}

// Encode returns tag || proto body for m.
func Encode(m proto.Message) ([]byte, error) {
	tag, err := TagOf(m)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 1, 1+proto.Size(m))
	b[0] = byte(tag)
	return proto.MarshalOptions{}.MarshalAppend(b, m)
}

// MustEncode is Encode for messages known to be encodable.
func MustEncode(m proto.Message) []byte {
	b, err := Encode(m)
	if err != nil {
		panic(err)
	}
	return b
}

// New returns an empty message for tag, or nil for an unknown tag.
func New(t Tag) proto.Message {
	switch t {
	case TagOpen:
		return new(agentpb.StreamOpen)
	case TagOpenAck:
		return new(agentpb.StreamOpenAck)
	case TagFrame:
		return new(agentpb.StreamFrame)
	case TagClose:
		return new(agentpb.StreamClose)
	case TagDesktopInput:
		return new(agentpb.DesktopInput)
	}
	return nil
}

// Decode splits a relay message into its tag and decoded body. An empty
// message, an unknown tag, or a body that does not decode is an error; the
// tag is returned whenever the first byte is a known tag. Unknown protobuf
// fields are tolerated.
func Decode(b []byte) (Tag, proto.Message, error) {
	if len(b) == 0 {
		return 0, nil, ErrEmpty
	}
	t := Tag(b[0])
	m := New(t)
	if m == nil {
		return t, nil, fmt.Errorf("%w %d", ErrUnknownTag, b[0])
	}
	if err := proto.Unmarshal(b[1:], m); err != nil {
		return t, nil, fmt.Errorf("%w: %s: %v", ErrBadBody, t, err)
	}
	return t, m, nil
}

// WriteFrame encodes m and writes it as one binary WebSocket message.
func WriteFrame(ctx context.Context, c *websocket.Conn, m proto.Message) error {
	b, err := Encode(m)
	if err != nil {
		return err
	}
	return c.Write(ctx, websocket.MessageBinary, b)
}

// ReadFrame reads the next binary message and decodes it. Text messages are
// skipped, as the relay does. A decode error is returned with the tag when it
// is known; the connection stays usable.
func ReadFrame(ctx context.Context, c *websocket.Conn) (Tag, proto.Message, error) {
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return 0, nil, err
		}
		if typ != websocket.MessageBinary {
			continue
		}
		return Decode(b)
	}
}
