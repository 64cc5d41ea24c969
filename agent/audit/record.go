// Package audit is the machine owner's local record of everything a platform
// did on this machine: one JSON line per op the agent answered (refusals
// included), and the owner's pause and resume.
//
// What a record holds is decided here, once, per op type: the key arguments
// (argv, paths, sizes, terminal geometry, a summary of desktop input), the
// result code, the duration and the bytes in and out. Never environment
// values (keys only), stdin, file contents, command output, typed text
// (unless the owner turns on input recording locally) or credentials.
package audit

import (
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Record is one line of the audit log.
type Record struct {
	Time time.Time `json:"time"`
	// Event is "op" (an op the agent answered), "pause", "resume", or
	// "audit" (a note about the log itself, such as records lost while the
	// disk was full).
	Event string `json:"event"`

	// The connection the op came through.
	Connection string `json:"connection,omitempty"` // the stored connection id
	Workspace  string `json:"workspace,omitempty"`
	Agent      string `json:"agent,omitempty"`
	Platform   string `json:"platform,omitempty"` // the platform's API URL, when known

	RequestID string `json:"request_id,omitempty"`
	Op        string `json:"op,omitempty"`
	Args      *Args  `json:"args,omitempty"`
	// Code is "OK" or the wire ErrorCode without its prefix
	// ("CONSENT_REQUIRED", "FENCED", ...).
	Code string `json:"code,omitempty"`
	// Reason is the error detail's reason (busy, paused, ...).
	Reason string `json:"reason,omitempty"`
	// Message is the error message of a refusal the agent itself decided
	// (fence, drain, pause, consent, unsupported); handler errors keep only
	// their code, as their text may quote what a command printed.
	Message    string  `json:"message,omitempty"`
	DurationMs float64 `json:"duration_ms"`
	BytesIn    int     `json:"bytes_in"`
	BytesOut   int     `json:"bytes_out"`

	// Until is the end of a pause (zero: until resumed).
	Until *time.Time `json:"until,omitempty"`
	// Note is the text of an "audit" event.
	Note string `json:"note,omitempty"`
}

// Args are an op's key arguments and result facts; only the fields the op
// has are set.
type Args struct {
	Argv       []string `json:"argv,omitempty"` // exec / pty_open command, git args
	Shell      bool     `json:"shell,omitempty"`
	Cwd        string   `json:"cwd,omitempty"`
	EnvKeys    []string `json:"env_keys,omitempty"` // names only, never values
	StdinBytes int      `json:"stdin_bytes,omitempty"`
	TimeoutMs  uint32   `json:"timeout_ms,omitempty"`
	ExitCode   *int32   `json:"exit_code,omitempty"`
	TimedOut   bool     `json:"timed_out,omitempty"`
	Cancelled  bool     `json:"cancelled,omitempty"` // an op-stream op cancelled by the platform

	Path      string `json:"path,omitempty"`
	To        string `json:"to,omitempty"` // fs_move destination
	Offset    uint64 `json:"offset,omitempty"`
	Length    uint64 `json:"length,omitempty"` // fs_read bytes asked for
	Bytes     int    `json:"bytes,omitempty"`  // bytes read, written, typed into a terminal, or a screenshot's PNG size
	Append    bool   `json:"append,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
	Entries   int    `json:"entries,omitempty"` // fs_list result size

	GitOp string `json:"git_op,omitempty"`

	PtyID   string `json:"pty_id,omitempty"`
	ScopeID string `json:"scope_id,omitempty"`
	Cols    uint32 `json:"cols,omitempty"`
	Rows    uint32 `json:"rows,omitempty"`
	Width   uint32 `json:"width,omitempty"`
	Height  uint32 `json:"height,omitempty"`

	Input *Input `json:"input,omitempty"`

	TargetVersion string `json:"target_version,omitempty"`

	// Op-stream (op_start, write_chunk, op_cancel, op_query, op_attach):
	// Starts is what an op_start runs (exec, fs_read, fs_write; its op id is
	// the record's request id), OpID the op a later request is about, Seq a
	// chunk's or an attach's sequence number. An op_start's outcome arrives
	// later in frames, so its record is of the start.
	Starts string `json:"starts,omitempty"`
	OpID   string `json:"op_id,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Last   bool   `json:"last,omitempty"` // the final chunk of a write

	// Text is what was typed (pty_write data, desktop key text), only when
	// the owner turned on input recording.
	Text string `json:"text,omitempty"`
}

// Input summarises desktop input: the event kind and, for keys, how many
// characters were typed (never which, unless input recording is on).
type Input struct {
	Kind   string `json:"kind"`             // pointer, key, scroll
	Action string `json:"action,omitempty"` // the pointer or key action
	Chars  int    `json:"chars,omitempty"`  // characters typed
	Key    string `json:"key,omitempty"`    // a named key (Enter, ctrl+c); single characters are counted, not named
}

// Connection identifies where ops come from.
type Connection struct {
	ID        string // stored connection id ("" when run with explicit flags)
	Workspace string
	Agent     string
	Platform  string // API URL
}

// opRecord builds the record of one answered op.
func opRecord(c Connection, recordInput bool, req *agentpb.ControlRequest, resp *agentpb.ControlResponse,
	op string, start time.Time, took time.Duration, bytesIn, bytesOut int) Record {
	r := Record{
		Time: start.UTC(), Event: "op",
		Connection: c.ID, Workspace: c.Workspace, Agent: c.Agent, Platform: c.Platform,
		RequestID: req.GetRequestId(), Op: op,
		Code:       "OK",
		DurationMs: float64(took.Microseconds()) / 1000,
		BytesIn:    bytesIn, BytesOut: bytesOut,
	}
	if resp.GetRequestId() != "" {
		r.RequestID = resp.GetRequestId()
	}
	if e := resp.GetError(); e != nil {
		r.Code = strings.TrimPrefix(e.GetCode().String(), "ERROR_CODE_")
		r.Reason = e.GetDetail()["reason"]
		if refusalCodes[e.GetCode()] {
			r.Message = truncate(e.GetMessage(), 300)
		}
	}
	if req != nil {
		r.Args = args(req, resp, recordInput)
	}
	return r
}

// refusalCodes are the codes whose messages the agent writes itself and
// that quote nothing a command printed or a file held.
var refusalCodes = map[agentpb.ErrorCode]bool{
	agentpb.ErrorCode_ERROR_CODE_FENCED:            true,
	agentpb.ErrorCode_ERROR_CODE_DRAINING:          true,
	agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED:  true,
	agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED:       true,
	agentpb.ErrorCode_ERROR_CODE_PROTOCOL:          true,
	agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE: true,
}

// args extracts the key arguments of req (and result facts of resp).
func args(req *agentpb.ControlRequest, resp *agentpb.ControlResponse, recordInput bool) *Args {
	switch op := req.GetOp().(type) {
	case *agentpb.ControlRequest_Exec:
		a := execArgs(op.Exec)
		if r := resp.GetExec(); r != nil {
			a.ExitCode, a.TimedOut = ptr(r.GetExitCode()), r.GetTimedOut()
		}
		return a
	case *agentpb.ControlRequest_FsRead:
		return &Args{Path: op.FsRead.GetPath(), Offset: op.FsRead.GetOffset(), Length: op.FsRead.GetLength(),
			Bytes: len(resp.GetFsRead().GetContent())}
	case *agentpb.ControlRequest_FsWrite:
		return &Args{Path: op.FsWrite.GetPath(), Bytes: len(op.FsWrite.GetContent()), Append: op.FsWrite.GetAppend()}
	case *agentpb.ControlRequest_FsList:
		return &Args{Path: op.FsList.GetPath(), Recursive: op.FsList.GetRecursive(), Entries: len(resp.GetFsList().GetEntries())}
	case *agentpb.ControlRequest_FsMkdir:
		return &Args{Path: op.FsMkdir.GetPath()}
	case *agentpb.ControlRequest_FsMove:
		return &Args{Path: op.FsMove.GetFrom(), To: op.FsMove.GetTo()}
	case *agentpb.ControlRequest_FsStat:
		return &Args{Path: op.FsStat.GetPath()}
	case *agentpb.ControlRequest_FsRemove:
		return &Args{Path: op.FsRemove.GetPath(), Recursive: op.FsRemove.GetRecursive()}
	case *agentpb.ControlRequest_Git:
		a := &Args{GitOp: strings.ToLower(strings.TrimPrefix(op.Git.GetOp().String(), "GIT_OP_")), Cwd: op.Git.GetCwd(),
			Argv: op.Git.GetArgs()}
		if r := resp.GetGit(); r != nil {
			a.ExitCode = ptr(r.GetExitCode())
		}
		return a
	case *agentpb.ControlRequest_PtyOpen:
		x := op.PtyOpen
		return &Args{Argv: x.GetCommand(), Cwd: x.GetCwd(), EnvKeys: keys(x.GetEnv()), Cols: x.GetCols(), Rows: x.GetRows(),
			ScopeID: x.GetScopeId(), PtyID: resp.GetPtyOpen().GetPtyId()}
	case *agentpb.ControlRequest_PtyWrite:
		a := &Args{PtyID: op.PtyWrite.GetPtyId(), Bytes: len(op.PtyWrite.GetData())}
		if recordInput {
			a.Text = strings.ToValidUTF8(string(op.PtyWrite.GetData()), "\uFFFD")
		}
		return a
	case *agentpb.ControlRequest_PtyResize:
		return &Args{PtyID: op.PtyResize.GetPtyId(), Cols: op.PtyResize.GetCols(), Rows: op.PtyResize.GetRows()}
	case *agentpb.ControlRequest_PtyClose:
		a := &Args{PtyID: op.PtyClose.GetPtyId()}
		if r := resp.GetPtyClose(); r != nil {
			a.ExitCode = ptr(r.GetExitCode())
		}
		return a
	case *agentpb.ControlRequest_DesktopEnsure:
		return &Args{Width: op.DesktopEnsure.GetWidth(), Height: op.DesktopEnsure.GetHeight()}
	case *agentpb.ControlRequest_DesktopScreenshot:
		r := resp.GetDesktopScreenshot()
		return &Args{Width: r.GetWidth(), Height: r.GetHeight(), Bytes: len(r.GetPng())}
	case *agentpb.ControlRequest_DesktopInput:
		return inputArgs(op.DesktopInput, recordInput)
	case *agentpb.ControlRequest_AgentUpdateApply:
		return &Args{TargetVersion: op.AgentUpdateApply.GetTargetVersion()}
	case *agentpb.ControlRequest_OpStart:
		return opStartArgs(op.OpStart)
	case *agentpb.ControlRequest_WriteChunk:
		c := op.WriteChunk
		return &Args{OpID: c.GetOpId(), Seq: c.GetSeq(), Offset: c.GetOffset(), Bytes: len(c.GetBytes()), Last: c.GetLast()}
	case *agentpb.ControlRequest_OpCancel:
		return &Args{OpID: op.OpCancel.GetOpId()}
	case *agentpb.ControlRequest_OpQuery:
		return &Args{OpID: op.OpQuery.GetOpId()}
	case *agentpb.ControlRequest_OpAttach:
		return &Args{OpID: op.OpAttach.GetOpId(), Seq: op.OpAttach.GetFromSeq()}
	}
	return nil
}

func execArgs(x *agentpb.ExecRequest) *Args {
	return &Args{Argv: x.GetCommand(), Shell: x.GetShell(), Cwd: x.GetCwd(), EnvKeys: keys(x.GetEnv()),
		StdinBytes: len(x.GetStdin()), TimeoutMs: x.GetTimeoutMs()}
}

// opStartArgs are the key arguments of what an op_start runs, as for the
// op served directly.
func opStartArgs(st *agentpb.OpStart) *Args {
	switch op := st.GetOp().(type) {
	case *agentpb.OpStart_Exec:
		a := execArgs(op.Exec)
		a.Starts = "exec"
		return a
	case *agentpb.OpStart_FsRead:
		return &Args{Starts: "fs_read", Path: op.FsRead.GetPath(), Offset: op.FsRead.GetOffset(), Length: op.FsRead.GetLength()}
	case *agentpb.OpStart_FsWrite:
		return &Args{Starts: "fs_write", Path: op.FsWrite.GetPath()}
	}
	return &Args{}
}

func inputArgs(in *agentpb.DesktopInputRequest, recordInput bool) *Args {
	a := &Args{}
	switch ev := in.GetEvent().(type) {
	case *agentpb.DesktopInputRequest_Pointer:
		a.Input = &Input{Kind: "pointer", Action: enumName(ev.Pointer.GetAction().String(), "POINTER_ACTION_")}
	case *agentpb.DesktopInputRequest_Scroll:
		a.Input = &Input{Kind: "scroll"}
	case *agentpb.DesktopInputRequest_Key:
		k := ev.Key.GetKey()
		in := &Input{Kind: "key", Action: enumName(ev.Key.GetAction().String(), "KEY_ACTION_")}
		// Text, and any single character, is typing: counted, never named.
		if n := utf8.RuneCountInString(k); ev.Key.GetIsText() || n <= 1 {
			in.Chars = n
		} else {
			in.Key = k
		}
		a.Input = in
		if recordInput {
			a.Text = k
		}
	default:
		a.Input = &Input{Kind: "none"}
	}
	return a
}

func enumName(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }

func keys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func ptr[T any](v T) *T { return &v }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// secretShapes are credentials an argument may carry: this platform's
// tokens, a bearer or basic authorization value, and userinfo in a URL.
var secretShapes = regexp.MustCompile(`(?i)(\bog[a-z]{1,3}_[A-Za-z0-9._~+/=-]{8,})|((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}|(://[^/\s:@]+:)[^/\s@]+@`)

// redactArgv masks credentials in a command line: an owner reading the log
// sees that a token was passed, never the token. The writer applies it
// (off the op's path) to a fresh slice; the request's own is never changed.
func redactArgv(argv []string) []string {
	if len(argv) == 0 {
		return nil
	}
	out := make([]string, len(argv))
	for i, s := range argv {
		out[i] = RedactSecrets(s)
	}
	return out
}

// RedactSecrets masks token-shaped substrings of s.
func RedactSecrets(s string) string {
	return secretShapes.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretShapes.FindStringSubmatch(m)
		switch {
		case sub[1] != "":
			prefix, _, _ := strings.Cut(sub[1], "_")
			return prefix + "_[redacted]"
		case sub[2] != "":
			return sub[2] + "[redacted]"
		default:
			return sub[3] + "[redacted]@"
		}
	})
}
