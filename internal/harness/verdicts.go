package harness

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// OpVerdicts judges a tally the way every scenario does: no op went
// unanswered, every error is typed, and every exec printed exactly what it
// must. strict adds "zero errors" (an unloaded agent has no excuse).
func OpVerdicts(prefix string, t Tally, strict bool) []Verdict {
	examples := strings.Join(t.Examples, "; ")
	name := func(s string) string {
		if prefix == "" {
			return s
		}
		return prefix + ": " + s
	}
	out := []Verdict{
		Check(name("ops without an answer (silent timeout)"), float64(t.ByClass[ClassNoAnswer]), AtMost, 0, "ops").
			With("%d of %d ops; %s", t.ByClass[ClassNoAnswer], t.Total, examples),
		Check(name("ops failing with an untyped error"), float64(t.ByClass[ClassUntyped]), AtMost, 0, "ops").
			With("%d of %d ops; %s", t.ByClass[ClassUntyped], t.Total, examples),
	}
	integrity := Check(name("exec output integrity (stdout wrong)"), float64(t.BadExecs), AtMost, 0, "execs").
		With("%d of %d answered execs printed something else; %s", t.BadExecs, t.Execs, examples)
	if t.Execs == 0 {
		integrity.Value, integrity.Pass = math.NaN(), false
		integrity.Detail = "no exec was answered, so nothing was checked"
	}
	out = append(out, integrity)
	if strict {
		out = append(out, Check(name("ops with any error"), float64(t.Errors()), AtMost, 0, "ops").
			With("%d of %d ops failed; %s", t.Errors(), t.Total, examples))
	}
	return out
}

// Millis is d in milliseconds, for verdict values.
func Millis(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// Bool is 1 for true, 0 for false, for verdicts checked with Equal 1.
func Bool(ok bool) float64 {
	if ok {
		return 1
	}
	return 0
}

// DriftPercent is the growth from before to after in percent of before
// (negative when it shrank); NaN when before is not positive.
func DriftPercent(before, after float64) float64 {
	if before <= 0 {
		return math.NaN()
	}
	return (after - before) / before * 100
}

// answeredOrRetryable judges an in-flight op under chaos: it passes when the
// op was answered correctly, or failed with a typed, retryable error.
func answeredOrRetryable(name string, o Outcome) Verdict {
	ok := o.Class == ClassOK || ((o.Class == ClassTyped || o.Class == ClassNoAnswer) && o.Retryable)
	v := Check(name, Bool(ok), Equal, 1, "")
	return v.With("outcome %s %s retryable=%v %s", o.Class, o.Code, o.Retryable, o.Detail)
}

// typedOutcome judges an op that may fail but must say so in a typed way.
func typedOutcome(name string, o Outcome) Verdict {
	ok := o.Class == ClassOK || o.Class == ClassTyped || o.Class == ClassNoAnswer
	return Check(name, Bool(ok), Equal, 1, "").With("outcome %s %s retryable=%v %s", o.Class, o.Code, o.Retryable, o.Detail)
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
