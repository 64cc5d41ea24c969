package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", durations(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"nearest rank rounds up", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of four is the max", durations(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{"tiny p is the min", durations(1, 2, 3), 0.1, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestLatenciesSortsAndRounds(t *testing.T) {
	// Unsorted input, one sample with sub-microsecond noise.
	samples := append(durations(30, 10, 20), 1500*time.Microsecond+400)
	got := Latencies("exec", samples, 2)
	want := LatencyRow{Op: "exec", Count: 4, Errors: 2, P50Ms: 10, P90Ms: 30, P99Ms: 30, MaxMs: 30}
	if got != want {
		t.Errorf("Latencies = %+v, want %+v", got, want)
	}
	if samples[0] != 30*time.Millisecond {
		t.Error("Latencies sorted the caller's slice")
	}
	if got := Latencies("none", nil, 0); got != (LatencyRow{Op: "none"}) {
		t.Errorf("empty = %+v", got)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		value, threshold float64
		cmp              Comparison
		want             bool
	}{
		{5, 5, AtMost, true},
		{5.01, 5, AtMost, false},
		{1, 1, AtLeast, true},
		{0, 1, AtLeast, false},
		{1, 1, Equal, true},
		{0, 1, Equal, false},
		{math.NaN(), 0, AtMost, false},
		{math.NaN(), 0, AtLeast, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v %s %v", tt.value, tt.cmp, tt.threshold), func(t *testing.T) {
			v := Check("x", tt.value, tt.cmp, tt.threshold, "ms")
			if v.Pass != tt.want {
				t.Errorf("pass = %v, want %v", v.Pass, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	pass := Check("a", 0, AtMost, 0, "")
	fail := Check("b", 1, AtMost, 0, "")
	tests := []struct {
		name string
		s    ScenarioResult
		want bool
	}{
		{"all verdicts pass", ScenarioResult{Verdicts: []Verdict{pass, pass}}, true},
		{"one verdict fails", ScenarioResult{Verdicts: []Verdict{pass, fail}}, false},
		{"no verdicts is no evidence", ScenarioResult{}, false},
		{"a setup error fails", ScenarioResult{Verdicts: []Verdict{pass}, Error: "boom"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.Decide()
			if tt.s.Pass != tt.want {
				t.Errorf("Pass = %v, want %v", tt.s.Pass, tt.want)
			}
			rep := Report{Scenarios: []ScenarioResult{{Verdicts: []Verdict{pass}}, tt.s}}
			rep.Decide()
			if rep.Pass != tt.want {
				t.Errorf("report Pass = %v, want %v", rep.Pass, tt.want)
			}
		})
	}
	empty := Report{}
	empty.Decide()
	if empty.Pass {
		t.Error("a report without scenarios passed")
	}
}

// TestReportJSONShape pins the JSON the harness writes: the names other
// tools read.
func TestReportJSONShape(t *testing.T) {
	rep := Report{
		Started: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC),
		Short:   true,
		Host:    HostInfo{OS: "linux", Arch: "amd64", CPUs: 2, GoVer: "go1.26"},
		Scenarios: []ScenarioResult{{
			Name: "baseline", DurationS: 1.5,
			Verdicts: []Verdict{Check("ops with any error", 0, AtMost, 0, "ops").With("%d of %d", 0, 10)},
			Latency:  []LatencyRow{Latencies("ping", durations(1, 2), 0)},
			Metrics:  map[string]float64{"ops": 10},
		}},
	}
	rep.Decide()
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"started": "2026-12-02T10:00:00Z",
		"short":   true,
		"pass":    true,
		"host":    map[string]any{"os": "linux", "arch": "amd64", "cpus": 2.0, "go": "go1.26"},
		"scenarios": []any{map[string]any{
			"name": "baseline", "pass": true, "duration_s": 1.5,
			"verdicts": []any{map[string]any{
				"name": "ops with any error", "pass": true, "value": 0.0, "unit": "ops",
				"compare": "<=", "threshold": 0.0, "detail": "0 of 10",
			}},
			"latency": []any{map[string]any{
				"op": "ping", "count": 2.0, "errors": 0.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 2.0, "max_ms": 2.0,
			}},
			"metrics": map[string]any{"ops": 10.0},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("JSON =\n%s\nwant the shape %v", buf.String(), want)
	}
}

func TestUnmeasuredVerdictIsNullInJSON(t *testing.T) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // as WriteJSON: no HTML escaping
	enc.SetEscapeHTML(false)
	if err := enc.Encode(Check("nothing measured", math.NaN(), AtMost, 0, "ms")); err != nil {
		t.Fatal(err)
	}
	b := bytes.TrimSpace(buf.Bytes())
	if want := `{"name":"nothing measured","pass":false,"unit":"ms","compare":"<=","threshold":0,"value":null}`; string(b) != want {
		t.Errorf("JSON = %s, want %s", b, want)
	}
}

func TestWriteSummary(t *testing.T) {
	rep := Report{Scenarios: []ScenarioResult{{
		Name:     "long",
		Verdicts: []Verdict{Check("tree killed", 1, AtMost, 0, "procs").With("pid 42 survived"), Check("timed_out", 1, Equal, 1, "")},
		Latency:  []LatencyRow{Latencies("exec", durations(5), 0)},
		Metrics:  map[string]float64{"rss_kib": 1024, "ratio": 0.5},
	}}}
	rep.Decide()
	var buf bytes.Buffer
	if err := rep.WriteSummary(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"== long  FAIL", "tree killed", "1 procs", "<= 0 procs", "FAIL tree killed: pid 42 survived",
		"metrics: ratio=0.50 rss_kib=1024", "RESULT: FAIL (1 scenarios)", "exec"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL timed_out") {
		t.Errorf("a passing verdict's detail was printed:\n%s", out)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		class     Class
		code      string
		retryable bool
	}{
		{"success", nil, ClassOK, "", false},
		{"plain error", fmt.Errorf("boom"), ClassUntyped, "", false},
		{"agent error", control.FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_OS, Message: "busy", Retryable: true}),
			ClassTyped, "OS", true},
		{"wrapped payload wall", fmt.Errorf("read: %w", control.FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE})),
			ClassTyped, "PAYLOAD_TOO_LARGE", false},
		{"control's synthesized timeout is no answer", control.FromAgentError(control.TimeoutResponse("r").GetError()),
			ClassNoAnswer, "TIMEOUT", true},
		{"an agent's own TIMEOUT is an answer", control.FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_TIMEOUT, Message: "op deadline"}),
			ClassTyped, "TIMEOUT", true},
		{"offline", control.FromAgentError(control.OfflineResponse("r").GetError()), ClassTyped, "AGENT_OFFLINE", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class, code, retry := Classify(tt.err)
			if class != tt.class || code != tt.code || retry != tt.retryable {
				t.Errorf("Classify = %s %s %v, want %s %s %v", class, code, retry, tt.class, tt.code, tt.retryable)
			}
		})
	}
}

func TestRecorderTallyAndRows(t *testing.T) {
	var rec Recorder
	add := func(kind string, class Class, code string, exec bool, ms int) {
		rec.Add(Outcome{Kind: kind, Class: class, Code: code, Exec: exec, Latency: time.Duration(ms) * time.Millisecond, Detail: "d"})
	}
	add("exec", ClassOK, "", true, 10)
	add("exec", ClassWrong, "", true, 20)
	add("exec", ClassNoAnswer, "TIMEOUT", true, 30) // not answered: not an integrity sample
	add("ping", ClassOK, "", false, 1)
	add("ping", ClassTyped, "DRAINING", false, 2)
	add("ping", ClassUntyped, "", false, 3)

	tl := rec.Tally()
	if tl.Total != 6 || tl.Errors() != 4 || tl.Execs != 2 || tl.BadExecs != 1 {
		t.Errorf("tally = %+v", tl)
	}
	if tl.ByCode["TIMEOUT"] != 1 || tl.ByCode["DRAINING"] != 1 || len(tl.Examples) != 4 {
		t.Errorf("codes %v examples %v", tl.ByCode, tl.Examples)
	}
	rows := rec.Rows()
	if len(rows) != 2 || rows[0].Op != "exec" || rows[0].Errors != 2 || rows[0].MaxMs != 30 || rows[1].Op != "ping" || rows[1].Errors != 2 {
		t.Errorf("rows = %+v", rows)
	}

	byName := map[string]Verdict{}
	for _, v := range OpVerdicts("p", tl, true) {
		byName[v.Name] = v
	}
	for name, want := range map[string]float64{
		"p: ops without an answer (silent timeout)": 1,
		"p: ops failing with an untyped error":      1,
		"p: exec output integrity (stdout wrong)":   1,
		"p: ops with any error":                     4,
	} {
		v, ok := byName[name]
		if !ok || v.Value != want || v.Pass {
			t.Errorf("%s = %+v, want failing value %v", name, v, want)
		}
	}
	if len(OpVerdicts("", tl, false)) != 3 {
		t.Error("non-strict OpVerdicts judged errors")
	}
}

func TestOpVerdictsWithoutExecsFails(t *testing.T) {
	var rec Recorder
	rec.Add(Outcome{Kind: "ping", Class: ClassOK})
	for _, v := range OpVerdicts("", rec.Tally(), true) {
		if strings.HasPrefix(v.Name, "exec output integrity") && v.Pass {
			t.Errorf("integrity passed with nothing checked: %+v", v)
		}
	}
}

func TestDriftPercent(t *testing.T) {
	if got := DriftPercent(100, 120); got != 20 {
		t.Errorf("growth = %v", got)
	}
	if got := DriftPercent(100, 90); got != -10 {
		t.Errorf("shrink = %v", got)
	}
	if !math.IsNaN(DriftPercent(0, 10)) {
		t.Error("no baseline is not NaN")
	}
}

func TestInFlightJudgements(t *testing.T) {
	tests := []struct {
		o                Outcome
		retryable, typed bool
	}{
		{Outcome{Class: ClassOK}, true, true},
		{Outcome{Class: ClassTyped, Code: "DRAINING", Retryable: true}, true, true},
		{Outcome{Class: ClassTyped, Code: "AGENT_OFFLINE"}, false, true},
		{Outcome{Class: ClassNoAnswer, Code: "TIMEOUT", Retryable: true}, true, true},
		{Outcome{Class: ClassUntyped}, false, false},
		{Outcome{Class: ClassWrong}, false, false},
	}
	for _, tt := range tests {
		if got := answeredOrRetryable("x", tt.o).Pass; got != tt.retryable {
			t.Errorf("answeredOrRetryable(%+v) = %v", tt.o, got)
		}
		if got := typedOutcome("x", tt.o).Pass; got != tt.typed {
			t.Errorf("typedOutcome(%+v) = %v", tt.o, got)
		}
	}
}

func TestMaxGap(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	beats := func(secs ...float64) []Event {
		out := make([]Event, len(secs))
		for i, s := range secs {
			out[i] = Event{Kind: EventHeartbeat, At: at(s)}
		}
		return out
	}
	tests := []struct {
		name     string
		beats    []Event
		from, to float64
		gap      float64
		n        int
	}{
		{"steady cadence", beats(0, 5, 10, 15), 1, 16, 5, 3},
		{"a missed beat", beats(0, 5, 15, 20), 1, 21, 10, 3},
		{"a gap straddling the window start counts whole", beats(0, 5), 4.9, 5.5, 5, 1},
		{"a window starting on a beat", beats(0, 5, 10), 5, 10.5, 5, 1},
		{"silence until the end counts", beats(0, 5), 1, 14, 9, 1},
		{"no beats at all", nil, 0, 8, 8, 0},
		{"beats after the window are ignored", beats(0, 5, 30), 1, 12, 7, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gap, n := maxGap(tt.beats, at(tt.from), at(tt.to))
			if want := time.Duration(tt.gap * float64(time.Second)); gap != want || n != tt.n {
				t.Errorf("maxGap = %v, %d; want %v, %d", gap, n, want, tt.n)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	all, err := Select("all")
	if err != nil || !reflect.DeepEqual(all, Scenarios) {
		t.Errorf("all = %v, %v", all, err)
	}
	one, err := Select("soak")
	if err != nil || !reflect.DeepEqual(one, []string{"soak"}) {
		t.Errorf("soak = %v, %v", one, err)
	}
	if _, err := Select("nope"); err == nil {
		t.Error("unknown scenario accepted")
	}
}

func TestParamsShortIsSmaller(t *testing.T) {
	full, short := paramsFor(Config{}), paramsFor(Config{Short: true})
	if short.pings >= full.pings || short.floodConc >= full.floodConc || short.soak >= full.soak || short.fleet >= full.fleet {
		t.Errorf("short %+v is not smaller than full %+v", short, full)
	}
	if full.floodConc != 256 || full.fleet != 32 || full.fleetOps != 16 || full.pings != 1000 || full.execs != 200 || full.fsOps != 100 {
		t.Errorf("full sizes drifted from the issue: %+v", full)
	}
	if got := paramsFor(Config{Short: true, Soak: time.Minute}).soak; got != time.Minute {
		t.Errorf("--soak ignored: %v", got)
	}
}
