package frame

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The byte-level examples of relay.md §1.3.
func TestSpecVectors(t *testing.T) {
	stale := "stale epoch (a newer sandbox is active)"
	cases := []struct {
		name string
		msg  proto.Message
		hex  string
	}{
		{"ack resume 0", &agentpb.StreamOpenAck{Accepted: true}, "02 08 01"},
		{"ack resume 5", &agentpb.StreamOpenAck{Accepted: true, ResumeFromSeq: 5}, "02 08 01 18 05"},
		{"rejected ack", &agentpb.StreamOpenAck{Error: &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_STREAM, Message: stale}},
			"02 12 2b 08 08 12 27" + hex.EncodeToString([]byte(stale))},
		{"frame", &agentpb.StreamFrame{ChannelId: "ch", Data: []byte("hi")}, "03 0a 02 63 68 1a 02 68 69"},
		{"close", &agentpb.StreamClose{ChannelId: "ch", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED, Message: "bye"},
			"04 0a 02 63 68 10 03 1a 03 62 79 65"},
		{"desktop click", &agentpb.DesktopInput{ChannelId: "ch", Event: &agentpb.DesktopInput_Pointer{Pointer: &agentpb.PointerEvent{
			X: 10, Y: 20, Action: agentpb.PointerAction_POINTER_ACTION_CLICK, Button: agentpb.PointerButton_POINTER_BUTTON_LEFT}}},
			"05 0a 02 63 68 12 08 08 0a 10 14 18 04 20 01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.hex)
			got, err := Encode(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encode = % x, want % x", got, want)
			}
			tag, m, err := Decode(want)
			if err != nil {
				t.Fatal(err)
			}
			if wantTag, _ := TagOf(tc.msg); tag != wantTag {
				t.Fatalf("tag %v, want %v", tag, wantTag)
			}
			if !proto.Equal(m, tc.msg) {
				t.Fatalf("decode = %v, want %v", m, tc.msg)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	if _, _, err := Decode(nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	if _, _, err := Decode([]byte{9, 1}); !errors.Is(err, ErrUnknownTag) {
		t.Fatalf("unknown tag: %v", err)
	}
	tag, _, err := Decode([]byte{3, 0x0a, 0x05, 'a'})
	if !errors.Is(err, ErrBadBody) || tag != TagFrame {
		t.Fatalf("truncated body: tag %v err %v", tag, err)
	}
	// Unknown fields are tolerated.
	if _, m, err := Decode([]byte{3, 0x78, 0x01, 0x1a, 0x01, 'x'}); err != nil || string(m.(*agentpb.StreamFrame).Data) != "x" {
		t.Fatalf("unknown field: %v %v", m, err)
	}
	if TagFrame.String() != "Frame" || Tag(0).String() != "Tag(0)" {
		t.Fatal("tag names")
	}
	if _, err := Encode(&agentpb.AgentError{}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("untagged type: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 8, 1})
	f.Add([]byte{3, 0x0a, 0x02, 'c', 'h', 0x1a, 0x02, 'h', 'i'})
	f.Add([]byte{4, 0x0a, 0x02, 'c', 'h', 0x10, 0x03})
	f.Add([]byte{5, 0x0a, 0x02, 'c', 'h', 0x12, 0x08, 0x08, 0x0a, 0x10, 0x14, 0x18, 0x04, 0x20, 0x01})
	f.Add([]byte{1, 0x0a, 0x00, 0x18, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		tag, m, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes with the same tag and decodes to an equal message.
		out, err := Encode(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if Tag(out[0]) != tag {
			t.Fatalf("tag changed %v → %v", tag, Tag(out[0]))
		}
		_, m2, err := Decode(out)
		if err != nil || !proto.Equal(m, m2) {
			t.Fatalf("round trip: %v %v %v", m, m2, err)
		}
	})
}

func FuzzPeekFrame(f *testing.F) {
	f.Add([]byte{3, 0x0a, 0x02, 'c', 'h', 0x10, 0x07, 0x1a, 0x02, 'h', 'i'})
	f.Add([]byte{3, 0x1a, 0x00, 0x10, 0x01, 0x10, 0x02})
	f.Add([]byte{3, 0x78, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		fi, perr := PeekFrame(b)
		tag, m, derr := Decode(b)
		if perr == nil && (derr != nil || tag != TagFrame) {
			t.Fatalf("peek accepted what decode rejects: %v", derr)
		}
		if derr == nil && tag == TagFrame {
			// Whatever decodes as a frame peeks to the same seq and length.
			sf := m.(*agentpb.StreamFrame)
			if perr != nil || fi.Seq != sf.Seq || fi.DataLen != len(sf.Data) {
				t.Fatalf("peek %+v %v, decode seq %d len %d", fi, perr, sf.Seq, len(sf.Data))
			}
		}
	})
}
