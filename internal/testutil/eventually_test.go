package testutil

import (
	"errors"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	if err := poll(time.Minute, func() error {
		if calls++; calls < 5 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 5 {
		t.Fatalf("poll = %v after %d calls, want nil after 5", err, calls)
	}
}

func TestPollGivesTheLastErrorAtTheDeadline(t *testing.T) {
	last := errors.New("still failing")
	if err := poll(0, func() error { return last }); err != last {
		t.Fatalf("poll = %v, want the condition's error", err)
	}
}
