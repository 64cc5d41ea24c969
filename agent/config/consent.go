package config

import (
	"os"
)

// cachedFile is one connection file as last parsed, with the stat that
// produced it.
type cachedFile struct {
	info  os.FileInfo
	creds *Credentials
}

// loadCached reads connection file id like loadFile, but parses it again only
// when its stat changed since the last read (another file replaced it, or its
// size or mtime moved). A failed read leaves the previous entry in place. The
// returned entry is shared: callers copy before handing it out.
func (s *Store) loadCached(id string) (*cachedFile, error) {
	path := s.Path(id)
	info, err := os.Stat(path)
	if err != nil {
		_, err = loadFile(path) // the error loadFile reports for this path
		return nil, err
	}
	s.mu.Lock()
	e := s.files[id]
	s.mu.Unlock()
	if e != nil && sameStat(e.info, info) {
		return e, nil
	}
	c, err := loadFile(path)
	if err != nil {
		return nil, err
	}
	e = &cachedFile{info: info, creds: c}
	s.mu.Lock()
	s.files[id] = e
	s.mu.Unlock()
	return e, nil
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
	if e, err := s.loadCached(id); err == nil {
		return e.creds.ConsentedWholeMachine, e.creds.ConsentedScreenControl
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev := s.files[id]; prev != nil {
		return prev.creds.ConsentedWholeMachine, false
	}
	return false, false
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
		return WriteFileAtomic(s.Path(id), data)
	}
	_, err = s.Save(c)
	return err
}
