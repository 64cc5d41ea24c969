package agentpb_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The three logical messages of shared/spec/wire.md.
func wantMessages() map[string]proto.Message {
	return map[string]proto.Message{
		"control_response": &agentpb.ControlResponse{
			RequestId: "req-0001",
			Result: &agentpb.ControlResponse_Git{Git: &agentpb.GitResponse{
				ExitCode: 0,
				Stdout:   []byte("on branch main\n"),
				Status: &agentpb.GitStatus{
					Branch: "main", Upstream: "origin/main", Ahead: 2, Behind: 0,
					Files: []*agentpb.GitFileStatus{
						{Path: "src/lib.rs", Code: " M"},
						{Path: "README.md", Code: "??"},
					},
				},
			}},
		},
		"control_request": &agentpb.ControlRequest{
			RequestId: "req-0002",
			Epoch:     7,
			Op: &agentpb.ControlRequest_Exec{Exec: &agentpb.ExecRequest{
				Command:   []string{"echo", "hello"},
				Cwd:       "/home/user/repo",
				Env:       map[string]string{"OPENGENI_AGENT": "1"},
				Stdin:     []byte("piped-input"),
				TimeoutMs: 5000,
			}},
		},
		"hello": &agentpb.Hello{
			AgentId: "agent-abc", WorkspaceId: "ws-xyz", AgentVersion: "0.1.0",
			Os: agentpb.Os_OS_LINUX, Arch: agentpb.Arch_ARCH_X86_64,
			MachineName: "buildbox", WorkspaceRoot: "/home/user",
			Capabilities: &agentpb.Capabilities{
				Exec: true, Filesystem: true, Git: true, Pty: true, Desktop: false,
				ConsentedWholeMachine: true, ConsentedScreenControl: false,
				Display: &agentpb.Display{Id: ":99", Width: 1920, Height: 1080, Virtual: true},
			},
			UpdateChannel: "stable", ResumeToken: "resume-token-1",
		},
	}
}

func readVectors(t *testing.T, name string) map[string][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", name, line)
		}
		b, err := hex.DecodeString(v)
		if err != nil {
			t.Fatalf("%s: %s: %v", name, k, err)
		}
		out[k] = b
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConformanceVectors(t *testing.T) {
	for _, file := range []string{"wire-ts-encoded.txt", "wire-rust-encoded.txt"} {
		vectors := readVectors(t, file)
		if len(vectors) != 3 {
			t.Fatalf("%s: %d vectors, want 3", file, len(vectors))
		}
		for name, want := range wantMessages() {
			t.Run(file+"/"+name, func(t *testing.T) {
				raw, ok := vectors[name]
				if !ok {
					t.Fatalf("missing vector %s", name)
				}
				got := want.ProtoReflect().New().Interface()
				if err := proto.Unmarshal(raw, got); err != nil {
					t.Fatalf("decode: %v", err)
				}
				if !proto.Equal(got, want) {
					t.Fatalf("decoded\n%v\nwant\n%v", got, want)
				}
				if len(got.ProtoReflect().GetUnknown()) != 0 {
					t.Fatalf("decode left unknown fields")
				}
				enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(enc, raw) {
					t.Fatalf("re-encoded bytes differ\n got %x\nwant %x", enc, raw)
				}
			})
		}
	}
}

// TestSchemaMatchesSpec checks every enum value and every field (number,
// type, label, name, oneof) of the next revision's listing
// (testdata/wire-schema-next.txt, a copy of shared/spec/wire-schema-next.txt)
// against the generated descriptors, exactly; and the v1 listing
// (wire-schema.txt) as a subset: every v1 item keeps its name and number.
func TestSchemaMatchesSpec(t *testing.T) {
	t.Run("next", func(t *testing.T) { checkSchema(t, "wire-schema-next.txt", true) })
	t.Run("v1", func(t *testing.T) { checkSchema(t, "wire-schema.txt", false) })
}

func checkSchema(t *testing.T, file string, exact bool) {
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	const pkg = "opengeni.agent.v1."
	enumRe := regexp.MustCompile(`^enum (\w+) \{ (.*) \}$`)
	fieldRe := regexp.MustCompile(`^\s+(\d+) (repeated |optional )?(map<\w+,\w+>|\w+) (\w+)(?:\s+\[oneof (\w+)\])?$`)
	var msg protoreflect.MessageDescriptor
	seenMsgs, seenFields := 0, map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case enumRe.MatchString(line):
			m := enumRe.FindStringSubmatch(line)
			d, err := protoregistry.GlobalTypes.FindEnumByName(protoreflect.FullName(pkg + m[1]))
			if err != nil {
				t.Fatalf("enum %s: %v", m[1], err)
			}
			vals := strings.Split(m[2], ", ")
			if exact && d.Descriptor().Values().Len() != len(vals) {
				t.Errorf("enum %s has %d values, spec %d", m[1], d.Descriptor().Values().Len(), len(vals))
			}
			for _, kv := range vals {
				k, v, _ := strings.Cut(kv, "=")
				ev := d.Descriptor().Values().ByName(protoreflect.Name(k))
				n, _ := strconv.Atoi(v)
				if ev == nil || int(ev.Number()) != n {
					t.Errorf("enum %s value %s=%d missing or renumbered", m[1], k, n)
				}
			}
		case strings.HasPrefix(line, "message "):
			name := strings.TrimSpace(strings.TrimPrefix(line, "message "))
			mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(pkg + name))
			if err != nil {
				t.Fatalf("message %s: %v", name, err)
			}
			msg = mt.Descriptor()
			seenMsgs++
			seenFields[name] = 0
		case fieldRe.MatchString(line):
			m := fieldRe.FindStringSubmatch(line)
			num, _ := strconv.Atoi(m[1])
			fd := msg.Fields().ByNumber(protoreflect.FieldNumber(num))
			if fd == nil || string(fd.Name()) != m[4] {
				t.Errorf("%s field %d %s missing or renamed", msg.Name(), num, m[4])
				continue
			}
			seenFields[string(msg.Name())]++
			if got, want := typeName(fd), m[3]; got != want {
				t.Errorf("%s.%s type %s, spec %s", msg.Name(), fd.Name(), got, want)
			}
			if (m[2] == "repeated ") != (fd.Cardinality() == protoreflect.Repeated && !fd.IsMap()) {
				t.Errorf("%s.%s repeated mismatch", msg.Name(), fd.Name())
			}
			if (m[2] == "optional ") != fd.HasOptionalKeyword() {
				t.Errorf("%s.%s optional mismatch", msg.Name(), fd.Name())
			}
			oneof := ""
			if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
				oneof = string(o.Name())
			}
			if oneof != m[5] {
				t.Errorf("%s.%s oneof %q, spec %q", msg.Name(), fd.Name(), oneof, m[5])
			}
		case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "syntax"):
		default:
			t.Errorf("unparsed spec line %q", line)
		}
	}
	if seenMsgs < 70 {
		t.Fatalf("parsed only %d messages", seenMsgs)
	}
	if !exact {
		return
	}
	if n := countMessages(); n != seenMsgs {
		t.Errorf("the proto has %d messages, the spec %d", n, seenMsgs)
	}
	for name, n := range seenFields {
		mt, _ := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(pkg + name))
		if mt.Descriptor().Fields().Len() != n {
			t.Errorf("message %s has %d fields, spec %d", name, mt.Descriptor().Fields().Len(), n)
		}
	}
}

// countMessages counts the top-level messages of the generated file (map
// entries are nested and not counted).
func countMessages() int {
	return agentpb.File_opengeni_agent_proto.Messages().Len()
}

func typeName(fd protoreflect.FieldDescriptor) string {
	if fd.IsMap() {
		return "map<" + typeName(fd.MapKey()) + "," + typeName(fd.MapValue()) + ">"
	}
	switch fd.Kind() {
	case protoreflect.MessageKind:
		return string(fd.Message().Name())
	case protoreflect.EnumKind:
		return string(fd.Enum().Name())
	default:
		return fd.Kind().String()
	}
}
