package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Comparison says how a verdict's measured value is held against its
// threshold.
type Comparison string

// The comparisons a verdict can make.
const (
	AtMost  Comparison = "<="
	AtLeast Comparison = ">="
	Equal   Comparison = "=="
)

// Verdict is one checked claim: the measured value, the threshold it is held
// against, and whether it passed. Verdicts are data; the summary and the JSON
// are both made from them.
type Verdict struct {
	Name      string     `json:"name"`
	Pass      bool       `json:"pass"`
	Value     float64    `json:"value"`
	Unit      string     `json:"unit,omitempty"`
	Compare   Comparison `json:"compare"`
	Threshold float64    `json:"threshold"`
	// Detail explains a failure (or notes how the value was measured).
	Detail string `json:"detail,omitempty"`
}

// MarshalJSON writes an unmeasured (NaN) value as null: JSON has no NaN.
func (v Verdict) MarshalJSON() ([]byte, error) {
	type plain Verdict
	out := struct {
		plain
		Value *float64 `json:"value"`
	}{plain: plain(v)}
	if !math.IsNaN(v.Value) {
		out.Value = &v.Value
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep "<=" readable
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// Check builds a verdict and decides it. A NaN value (nothing was measured)
// never passes.
func Check(name string, value float64, cmp Comparison, threshold float64, unit string) Verdict {
	v := Verdict{Name: name, Value: value, Unit: unit, Compare: cmp, Threshold: threshold}
	switch {
	case math.IsNaN(value):
		v.Pass = false
	case cmp == AtMost:
		v.Pass = value <= threshold
	case cmp == AtLeast:
		v.Pass = value >= threshold
	case cmp == Equal:
		v.Pass = value == threshold
	}
	return v
}

// With returns v with a detail note.
func (v Verdict) With(format string, args ...any) Verdict {
	v.Detail = fmt.Sprintf(format, args...)
	return v
}

// LatencyRow summarises the round-trip latencies of one op kind.
type LatencyRow struct {
	Op     string  `json:"op"`
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// Percentile is the nearest-rank percentile p (0 < p <= 100) of sorted: the
// smallest sample at or above which p percent of the samples lie. It is 0
// for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Latencies builds the row of one op kind from its samples (any order).
func Latencies(op string, samples []time.Duration, errors int) LatencyRow {
	s := slices.Clone(samples)
	slices.Sort(s)
	row := LatencyRow{Op: op, Count: len(s), Errors: errors}
	if len(s) == 0 {
		return row
	}
	row.P50Ms = ms(Percentile(s, 50))
	row.P90Ms = ms(Percentile(s, 90))
	row.P99Ms = ms(Percentile(s, 99))
	row.MaxMs = ms(s[len(s)-1])
	return row
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// ScenarioResult is what one scenario measured.
type ScenarioResult struct {
	Name      string       `json:"name"`
	Pass      bool         `json:"pass"`
	DurationS float64      `json:"duration_s"`
	Verdicts  []Verdict    `json:"verdicts"`
	Latency   []LatencyRow `json:"latency,omitempty"`
	// Metrics are named measurements that are reported but not judged
	// (RSS, counts).
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Error is set when the scenario could not run to the end (setup
	// failure); such a scenario fails.
	Error string `json:"error,omitempty"`
}

// Decide sets Pass: every verdict passed, there was at least one, and the
// scenario ran to the end.
func (r *ScenarioResult) Decide() {
	r.Pass = r.Error == "" && len(r.Verdicts) > 0
	for _, v := range r.Verdicts {
		if !v.Pass {
			r.Pass = false
		}
	}
}

// Report is the whole run, as written with --json.
type Report struct {
	Started   time.Time        `json:"started"`
	Short     bool             `json:"short"`
	Host      HostInfo         `json:"host"`
	Pass      bool             `json:"pass"`
	Scenarios []ScenarioResult `json:"scenarios"`
}

// HostInfo says where the numbers were taken.
type HostInfo struct {
	OS    string `json:"os"`
	Arch  string `json:"arch"`
	CPUs  int    `json:"cpus"`
	GoVer string `json:"go"`
}

// Decide sets Pass from the scenarios: all passed and there was at least one.
func (r *Report) Decide() {
	r.Pass = len(r.Scenarios) > 0
	for i := range r.Scenarios {
		r.Scenarios[i].Decide()
		if !r.Scenarios[i].Pass {
			r.Pass = false
		}
	}
}

// WriteJSON writes the report, indented.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSummary writes the human tables: per scenario the latency table,
// the metrics and every verdict (with the detail of each failed one), then
// the overall result.
func (r *Report) WriteSummary(w io.Writer) error {
	for _, s := range r.Scenarios {
		fmt.Fprintf(w, "\n== %s  %s  (%.1fs)\n", s.Name, passWord(s.Pass), s.DurationS)
		if s.Error != "" {
			fmt.Fprintf(w, "   error: %s\n", s.Error)
		}
		if len(s.Latency) > 0 {
			tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "   op\tcount\terrors\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
			for _, l := range s.Latency {
				fmt.Fprintf(tw, "   %s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", l.Op, l.Count, l.Errors, l.P50Ms, l.P90Ms, l.P99Ms, l.MaxMs)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(s.Metrics) > 0 {
			keys := make([]string, 0, len(s.Metrics))
			for k := range s.Metrics {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = fmt.Sprintf("%s=%s", k, formatValue(s.Metrics[k]))
			}
			fmt.Fprintf(w, "   metrics: %s\n", strings.Join(parts, " "))
		}
		tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "   verdict\tresult\tmeasured\tthreshold")
		for _, v := range s.Verdicts {
			fmt.Fprintf(tw, "   %s\t%s\t%s %s\t%s %s %s\n", v.Name, passWord(v.Pass), formatValue(v.Value), v.Unit, v.Compare, formatValue(v.Threshold), v.Unit)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, v := range s.Verdicts {
			if !v.Pass && v.Detail != "" {
				fmt.Fprintf(w, "   FAIL %s: %s\n", v.Name, v.Detail)
			}
		}
	}
	_, err := fmt.Fprintf(w, "\nRESULT: %s (%d scenarios)\n", passWord(r.Pass), len(r.Scenarios))
	return err
}

func passWord(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func formatValue(f float64) string {
	if math.IsNaN(f) {
		return "n/a"
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprintf("%.2f", f)
}
