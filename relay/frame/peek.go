package frame

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// FrameInfo is what the relay needs from a StreamFrame to route it: its seq
// and the length of its data, read without copying the payload.
type FrameInfo struct {
	Seq     uint64
	DataLen int
}

// PeekFrame reads seq and len(data) from a tag-3 message (tag byte included)
// without decoding the payload. It accepts exactly what Decode accepts for a
// StreamFrame (last value wins for repeated scalar fields; unknown fields are
// skipped); callers that need the full message use Decode.
func PeekFrame(b []byte) (FrameInfo, error) {
	var fi FrameInfo
	if len(b) == 0 || Tag(b[0]) != TagFrame {
		return fi, fmt.Errorf("%w: not a StreamFrame", ErrBadBody)
	}
	b = b[1:]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fi, fmt.Errorf("%w: %v", ErrBadBody, protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fi, fmt.Errorf("%w: field number %d", ErrBadBody, num)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fi, fmt.Errorf("%w: %v", ErrBadBody, protowire.ParseError(n))
			}
			if !utf8.Valid(v) {
				return fi, fmt.Errorf("%w: channel_id is not UTF-8", ErrBadBody)
			}
			b = b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fi, fmt.Errorf("%w: %v", ErrBadBody, protowire.ParseError(n))
			}
			fi.Seq = v
			b = b[n:]
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fi, fmt.Errorf("%w: %v", ErrBadBody, protowire.ParseError(n))
			}
			fi.DataLen = len(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fi, fmt.Errorf("%w: %v", ErrBadBody, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return fi, nil
}
