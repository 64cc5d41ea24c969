package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

const pauseFile = "pause.json"

// Pause is the owner's pause switch for the whole machine (every
// connection): while it holds, the running agent refuses every op but ping
// and metrics. It lives in <dir>/pause.json, so it survives restarts.
type Pause struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until,omitzero"` // zero: until resumed
}

// Active reports whether the pause holds at now.
func (p Pause) Active(now time.Time) bool { return p.Until.IsZero() || now.Before(p.Until) }

// PausePath is the pause switch's file.
func (s *Store) PausePath() string { return filepath.Join(s.dir, pauseFile) }

// SetPause pauses the machine from now until until (zero: until Resume).
func (s *Store) SetPause(now, until time.Time) (Pause, error) {
	p := Pause{Since: now.UTC()}
	if !until.IsZero() {
		p.Until = until.UTC()
	}
	data, err := json.Marshal(p)
	if err != nil {
		return Pause{}, err
	}
	if err := ensurePrivateDir(s.dir); err != nil {
		return Pause{}, err
	}
	return p, WriteFileAtomic(s.PausePath(), append(data, '\n'))
}

// Resume lifts the pause (no pause is fine).
func (s *Store) Resume() error {
	if err := os.Remove(s.PausePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Paused reads the switch live, like Consent: a stat on every call, the
// file parsed again only when it changed. An expired pause is no pause. An
// unreadable or malformed file fails closed: paused until resumed (the
// owner meant to stop the machine; `resume` removes the file).
func (s *Store) Paused(now time.Time) (Pause, bool) {
	path := s.PausePath()
	info, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return Pause{}, false
	}
	if err != nil {
		return Pause{}, true
	}
	s.mu.Lock()
	cached := s.pause
	s.mu.Unlock()
	if cached == nil || !sameStat(cached.info, info) {
		p, err := readPause(path)
		if err != nil {
			return Pause{}, true
		}
		cached = &cachedPause{info: info, pause: p}
		s.mu.Lock()
		s.pause = cached
		s.mu.Unlock()
	}
	return cached.pause, cached.pause.Active(now)
}

type cachedPause struct {
	info  os.FileInfo
	pause Pause
}

func readPause(path string) (Pause, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Pause{}, err
	}
	var p Pause
	if err := json.Unmarshal(data, &p); err != nil {
		return Pause{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}
