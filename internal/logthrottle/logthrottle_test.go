package logthrottle

import (
	"testing"
	"time"
)

func TestThrottleLogsOncePerIntervalAndCountsTheRest(t *testing.T) {
	now := time.Unix(1000, 0)
	th := &Throttle{Interval: 10 * time.Second, Now: func() time.Time { return now }}
	type step struct {
		advance        time.Duration
		key            string
		wantOK         bool
		wantSuppressed int
	}
	steps := []step{
		{0, "draining", true, 0},
		{time.Second, "draining", false, 0},
		{time.Second, "draining", false, 0},
		{0, "busy", true, 0}, // keys are independent
		{time.Second, "draining", false, 0},
		{7 * time.Second, "draining", true, 3}, // 10 s after the first line
		{time.Second, "draining", false, 0},
		{10 * time.Second, "draining", true, 1},
		{time.Hour, "draining", true, 0},
		{0, "busy", true, 0},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		ok, n := th.Allow(s.key)
		if ok != s.wantOK || n != s.wantSuppressed {
			t.Fatalf("step %d (%s): Allow = %v, %d; want %v, %d", i, s.key, ok, n, s.wantOK, s.wantSuppressed)
		}
	}
}

func TestThrottleZeroValueUsesDefaultInterval(t *testing.T) {
	var th Throttle
	if ok, _ := th.Allow("k"); !ok {
		t.Fatal("first line refused")
	}
	if ok, _ := th.Allow("k"); ok {
		t.Fatal("second line within the default interval allowed")
	}
}
