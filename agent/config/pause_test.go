package config

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// The pause switch is read live: set, extended, expired, lifted, and a
// damaged file fails closed.
func TestPauseSwitchIsReadLive(t *testing.T) {
	s := NewStore(t.TempDir())
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	if _, on := s.Paused(now); on {
		t.Fatal("paused before any pause")
	}
	if _, err := s.SetPause(now, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	p, on := s.Paused(now.Add(time.Minute))
	if !on || !p.Until.Equal(now.Add(time.Hour)) || !p.Since.Equal(now) {
		t.Fatalf("paused %v %+v", on, p)
	}
	if _, on := s.Paused(now.Add(2 * time.Hour)); on {
		t.Fatal("a pause past its end still holds")
	}
	if _, err := s.SetPause(now, time.Time{}); err != nil { // re-paused until resumed: seen at once
		t.Fatal(err)
	}
	if p, on := s.Paused(now.Add(48 * time.Hour)); !on || !p.Until.IsZero() {
		t.Fatalf("indefinite pause: %v %+v", on, p)
	}
	if st, err := os.Stat(s.PausePath()); err != nil || (runtime.GOOS != "windows" && st.Mode().Perm() != 0o600) {
		t.Fatalf("pause file: %v %v", st, err)
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, on := s.Paused(now); on {
		t.Fatal("paused after resume")
	}
	if err := s.Resume(); err != nil {
		t.Fatalf("resume when not paused: %v", err)
	}
	if err := os.WriteFile(s.PausePath(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, on := s.Paused(now); !on {
		t.Fatal("a damaged pause file must fail closed (paused)")
	}
}
