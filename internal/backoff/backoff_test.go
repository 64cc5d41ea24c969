package backoff

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/coder/quartz"
)

func TestExponentialCeilingClampsToCap(t *testing.T) {
	p := Exponential(time.Second, 60*time.Second)
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if got := p.Ceiling(i); got != w*time.Second {
			t.Errorf("Ceiling(%d) = %v, want %v", i, got, w*time.Second)
		}
	}
	if got := p.Ceiling(math.MaxInt32); got != 60*time.Second {
		t.Errorf("huge attempt: %v", got)
	}
}

func TestStandardFastPhaseThenExponential(t *testing.T) {
	p := Standard()
	for i := 0; i < 20; i++ {
		if got := p.Ceiling(i); got != 3*time.Second {
			t.Fatalf("fast attempt %d: %v", i, got)
		}
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for i, w := range want {
		if got := p.Ceiling(20 + i); got != w*time.Second {
			t.Errorf("Ceiling(%d) = %v, want %v", 20+i, got, w*time.Second)
		}
	}
}

func TestJitterStaysWithinCeiling(t *testing.T) {
	p := Exponential(50*time.Millisecond, 10*time.Second)
	for a := 0; a < 40; a++ {
		c := p.Ceiling(a)
		for i := 0; i < 200; i++ {
			if d := Jitter(c); d < 0 || d > c {
				t.Fatalf("attempt %d: %v outside [0,%v]", a, d, c)
			}
		}
	}
	if Jitter(0) != 0 {
		t.Fatal("zero ceiling must give zero delay")
	}
}

func TestResetReturnsToFastWindow(t *testing.T) {
	b := &Backoff{Policy: Standard()}
	for i := 0; i < 25; i++ {
		b.Next()
	}
	if b.Attempt() != 25 {
		t.Fatalf("attempt = %d", b.Attempt())
	}
	b.Reset()
	if b.Attempt() != 0 || b.Policy.Ceiling(b.Attempt()) != 3*time.Second {
		t.Fatal("reset did not return to the fast window")
	}
}

// Sleep waits on its clock: it returns once the mock clock reaches the drawn
// delay (not before, not on wall time), and at once when ctx ends.
func TestSleepFollowsTheClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clk := quartz.NewMock(t)
	trap := clk.Trap().NewTimer("backoff")
	defer trap.Close()
	b := Backoff{Policy: Policy{Base: time.Hour, Cap: time.Hour, FastAttempts: 1, FastCeiling: time.Hour}, Clock: clk}
	done := make(chan error, 1)
	go func() { done <- b.Sleep(ctx) }()
	call := trap.MustWait(ctx)
	d := call.Duration
	call.MustRelease(ctx)
	if d < 0 || d > time.Hour {
		t.Fatalf("drew %v, want within [0, 1h]", d)
	}
	if d > 0 {
		clk.Advance(d - 1).MustWait(ctx)
		select {
		case err := <-done:
			t.Fatalf("Sleep returned %v before its delay", err)
		default:
		}
		clk.Advance(1).MustWait(ctx)
	}
	if err := <-done; err != nil {
		t.Fatalf("Sleep = %v", err)
	}

	stop, stopCancel := context.WithCancel(ctx)
	go func() { done <- SleepOn(stop, clk, time.Hour) }()
	trap.MustWait(ctx).MustRelease(ctx)
	stopCancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("SleepOn after cancel = %v", err)
	}
}
