// Package testutil holds the module's test helpers that belong to no
// particular subsystem: polling a condition until it holds.
package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it returns nil; after timeout it fails tb
// with cond's last error. The poll starts at 1 ms and backs off to 10 ms,
// so a condition that holds soon is seen soon and a slow one costs little.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	if err := poll(timeout, cond); err != nil {
		tb.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// EventuallyTrue polls cond until it holds; after timeout it fails tb,
// naming what it waited for.
func EventuallyTrue(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	if poll(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}) != nil {
		tb.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}

// poll is the loop of both: cond's last error once timeout has passed.
func poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 10*time.Millisecond)
	}
}
