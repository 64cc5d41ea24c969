package harness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Class is how one op ended, as the platform would see it.
type Class string

// The op classes. Only ClassOK and ClassTyped are acceptable answers under
// load: a silent timeout, an error the platform cannot interpret, or an
// answer with the wrong content is a failure.
const (
	ClassOK = Class("ok")
	// ClassTyped is a *control.Error the agent sent (or the control side
	// synthesized for a transport condition other than "no answer").
	ClassTyped = Class("typed_error")
	// ClassNoAnswer is the control side's synthesized TIMEOUT: a responder
	// existed but never answered.
	ClassNoAnswer = Class("no_answer")
	// ClassUntyped is any error that is not a *control.Error.
	ClassUntyped = Class("untyped_error")
	// ClassWrong is an answer whose content is not what the op must return
	// (an exec whose stdout differs from what the command prints).
	ClassWrong = Class("wrong_output")
)

// Outcome is one recorded op.
type Outcome struct {
	Kind      string
	Class     Class
	Code      string // the error code name for typed errors and no answer
	Retryable bool
	Latency   time.Duration
	Detail    string
	// Exec marks ops whose output integrity was checked.
	Exec bool
}

// Classify maps an op error onto its class, code and retryability.
func Classify(err error) (Class, string, bool) {
	if err == nil {
		return ClassOK, "", false
	}
	var ce *control.Error
	if !errors.As(err, &ce) {
		return ClassUntyped, "", false
	}
	code := strings.TrimPrefix(ce.Code.String(), "ERROR_CODE_")
	if ce.Code == agentpb.ErrorCode_ERROR_CODE_TIMEOUT && ce.Message == control.TimeoutMessage {
		return ClassNoAnswer, code, ce.Retryable
	}
	return ClassTyped, code, ce.Retryable
}

// Recorder collects outcomes from many goroutines.
type Recorder struct {
	mu       sync.Mutex
	outcomes []Outcome
}

// Add records o.
func (r *Recorder) Add(o Outcome) {
	r.mu.Lock()
	r.outcomes = append(r.outcomes, o)
	r.mu.Unlock()
}

// Outcomes returns a copy of everything recorded.
func (r *Recorder) Outcomes() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.outcomes)
}

// Tally counts outcomes by class; Execs and BadExecs count the exec ops
// whose output was checked and those whose output was wrong.
type Tally struct {
	Total    int
	ByClass  map[Class]int
	ByCode   map[string]int
	Execs    int
	BadExecs int
	// Examples holds a few failure details (at most 5) for the report.
	Examples []string
}

// Tally summarises the recorded outcomes.
func (r *Recorder) Tally() Tally {
	t := Tally{ByClass: map[Class]int{}, ByCode: map[string]int{}}
	for _, o := range r.Outcomes() {
		t.Total++
		t.ByClass[o.Class]++
		if o.Code != "" {
			t.ByCode[o.Code]++
		}
		if o.Exec && (o.Class == ClassOK || o.Class == ClassWrong) {
			t.Execs++
			if o.Class == ClassWrong {
				t.BadExecs++
			}
		}
		if o.Class != ClassOK && len(t.Examples) < 5 {
			t.Examples = append(t.Examples, fmt.Sprintf("%s %s %s %s", o.Kind, o.Class, o.Code, o.Detail))
		}
	}
	return t
}

// Errors is every outcome that is not ok.
func (t Tally) Errors() int { return t.Total - t.ByClass[ClassOK] }

// Rows is the latency table: one row per op kind in first-seen order.
// Latency counts every op of the kind; Errors counts those not ok.
func (r *Recorder) Rows() []LatencyRow {
	var kinds []string
	samples := map[string][]time.Duration{}
	errs := map[string]int{}
	for _, o := range r.Outcomes() {
		if _, seen := samples[o.Kind]; !seen {
			kinds = append(kinds, o.Kind)
		}
		samples[o.Kind] = append(samples[o.Kind], o.Latency)
		if o.Class != ClassOK {
			errs[o.Kind]++
		}
	}
	rows := make([]LatencyRow, len(kinds))
	for i, k := range kinds {
		rows[i] = Latencies(k, samples[k], errs[k])
	}
	return rows
}

// Driver issues ops to one agent through the control library and records
// each outcome.
type Driver struct {
	Session *control.Session
	RPC     control.RPC
	Rec     *Recorder
	// Timeout bounds the ops that have no deadline of their own.
	Timeout time.Duration
}

func (d *Driver) record(kind string, start time.Time, err error, exec bool, wrong string) Outcome {
	class, code, retry := Classify(err)
	o := Outcome{Kind: kind, Class: class, Code: code, Retryable: retry, Latency: time.Since(start), Exec: exec}
	if err != nil {
		o.Detail = err.Error()
	} else if wrong != "" {
		o.Class, o.Detail = ClassWrong, wrong
	}
	d.Rec.Add(o)
	return o
}

// Ping sends a ping through the RPC (the session's Ping hides the error) and
// checks the nonce echo.
func (d *Driver) Ping(ctx context.Context, kind string) Outcome {
	start := time.Now()
	nonce := rand.Uint64N(1 << 53)
	req := &agentpb.ControlRequest{RequestId: uuid.NewString(), Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: nonce}}}
	resp, err := d.RPC.Request(ctx, d.Session.Subject(), req, d.Timeout)
	wrong := ""
	if err == nil {
		if ae := resp.GetError(); ae != nil {
			err = control.FromAgentError(ae)
		} else if got := resp.GetPing(); got == nil || got.GetNonce() != nonce {
			wrong = fmt.Sprintf("ping reply %v does not echo nonce %d", resp.GetResult(), nonce)
		}
	}
	return d.record(kind, start, err, false, wrong)
}

// Exec runs a shell command line and checks its stdout is exactly want and
// it exited 0.
func (d *Driver) Exec(ctx context.Context, kind, cmdline, want string) Outcome {
	start := time.Now()
	r, err := d.Session.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{cmdline}, Shell: true})
	return d.record(kind, start, err, true, execMismatch(r, err, want))
}

// Echo is Exec of `echo n<i>` (optionally after a short sleep, so ops
// overlap), the integrity probe of every scenario.
func (d *Driver) Echo(ctx context.Context, kind string, i int, sleep string) Outcome {
	cmd := fmt.Sprintf("echo n%d", i)
	if sleep != "" {
		cmd = "sleep " + sleep + "; " + cmd
	}
	return d.Exec(ctx, kind, cmd, fmt.Sprintf("n%d\n", i))
}

func execMismatch(r *agentpb.ExecResponse, err error, want string) string {
	switch {
	case err != nil:
		return ""
	case r.GetTimedOut():
		return "timed out"
	case r.GetExitCode() != 0:
		return fmt.Sprintf("exit code %d, stderr %q", r.GetExitCode(), clip(r.GetStderr()))
	case string(r.GetStdout()) != want:
		return fmt.Sprintf("stdout %q, want %q (stderr %q)", clip(r.GetStdout()), clip([]byte(want)), clip(r.GetStderr()))
	}
	return ""
}

func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// FSWriteRead writes a small file unique to i and reads it back.
func (d *Driver) FSWriteRead(ctx context.Context, i int) {
	path := fmt.Sprintf("/workspace/ops/f%d.txt", i)
	content := []byte(fmt.Sprintf("content of file %d\n", i))
	start := time.Now()
	n, err := d.Session.WriteFile(ctx, path, content, nil)
	wrong := ""
	if err == nil && n != uint64(len(content)) {
		wrong = fmt.Sprintf("wrote %d of %d bytes", n, len(content))
	}
	if d.record("fs_write", start, err, false, wrong).Class != ClassOK {
		return
	}
	start = time.Now()
	got, err := d.Session.ReadFile(ctx, path, 0)
	wrong = ""
	if err == nil && string(got) != string(content) {
		wrong = fmt.Sprintf("read %q, want %q", clip(got), content)
	}
	d.record("fs_read", start, err, false, wrong)
}

// FSStat stats the ops directory (created by FSWriteRead).
func (d *Driver) FSStat(ctx context.Context) {
	start := time.Now()
	st, err := d.Session.Stat(ctx, "/workspace/ops")
	wrong := ""
	if err == nil && (!st.GetExists() || st.GetEntry().GetKind() != agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY) {
		wrong = "ops is not a directory"
	}
	d.record("fs_stat", start, err, false, wrong)
}

// FSList lists the ops directory.
func (d *Driver) FSList(ctx context.Context) {
	start := time.Now()
	_, err := d.Session.ListFiles(ctx, "/workspace/ops", false)
	d.record("fs_list", start, err, false, "")
}

// Mixed runs op number i of a fixed mix: ping, exec (echo after a short
// sleep so execs overlap), fs write+read, stat, list.
func (d *Driver) Mixed(ctx context.Context, i int) {
	switch i % 5 {
	case 0:
		d.Ping(ctx, "ping")
	case 1:
		d.Echo(ctx, "exec", i, "0.05")
	case 2:
		d.FSWriteRead(ctx, i)
	case 3:
		d.FSStat(ctx)
	case 4:
		d.FSList(ctx)
	}
}
