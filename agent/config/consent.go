package config

import (
	"os"
)

// consentEntry caches one connection file's consent bits with the stat that
// produced them.
type consentEntry struct {
	info          os.FileInfo
	wholeMachine  bool
	screenControl bool
}

// Consent reports the machine owner's consent for connection id, read live:
// the file is stat'ed on every call and re-read only when it changed (another
// file replaced it, or its size or mtime moved), so `opengeni-agent consent`
// or a re-enrollment takes effect on the next call without a restart.
//
// It fails closed for screen control: when the file is gone or unreadable,
// screenControl is false (wholeMachine keeps its last known value, since
// the connection is then being removed and its runner stopped).
func (s *Store) Consent(id string) (wholeMachine, screenControl bool) {
	path := s.Path(id)
	info, statErr := os.Stat(path)

	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.consent[id]
	if statErr != nil {
		if prev != nil {
			return prev.wholeMachine, false
		}
		return false, false
	}
	if prev != nil && sameStat(prev.info, info) {
		return prev.wholeMachine, prev.screenControl
	}
	c, err := loadFile(path)
	if err != nil {
		if prev != nil {
			return prev.wholeMachine, false
		}
		return false, false
	}
	s.consent[id] = &consentEntry{info: info, wholeMachine: c.ConsentedWholeMachine, screenControl: c.ConsentedScreenControl}
	return c.ConsentedWholeMachine, c.ConsentedScreenControl
}

func sameStat(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// SetScreenControl records the owner's screen-control consent for
// connection id (an atomic rewrite of its file, so a live reader sees the
// change on its next call).
func (s *Store) SetScreenControl(id string, on bool) error {
	c, err := s.Load(id)
	if err != nil {
		return err
	}
	c.ConsentedScreenControl = on
	if c.APIURL == "" {
		return errEmptyAPIURL
	}
	if c.ID() != id {
		// A hand-copied file under another name: rewrite it in place.
		data, err := c.Marshal()
		if err != nil {
			return err
		}
		return writeFileAtomic(s.Path(id), data)
	}
	_, err = s.Save(c)
	return err
}
