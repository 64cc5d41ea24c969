package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrNotEnrolled is a connection (or legacy credentials file) that does not exist.
var ErrNotEnrolled = errors.New("not enrolled")

// ErrNoConnection is a Find reference that matches nothing.
var ErrNoConnection = errors.New("no such connection")

const (
	connectionsDir = "connections"
	locksDir       = "locks"
	legacyFile     = "credentials.json"
	connExt        = ".json"
)

// ConnectionID is the stable id of the connection to workspaceID through
// apiURL: the first 16 hex digits of SHA-256(normalized API URL "\n"
// workspace id). It names the file and is what `disconnect` takes.
func ConnectionID(apiURL, workspaceID string) string {
	if n, err := NormalizeAPIURL(apiURL); err == nil {
		apiURL = n
	}
	sum := sha256.Sum256([]byte(apiURL + "\n" + workspaceID))
	return hex.EncodeToString(sum[:8])
}

// Connection is one stored connection file. Creds is nil and Err set when
// the file could not be read or parsed.
type Connection struct {
	ID    string
	Path  string
	Creds *Credentials
	Err   error
}

// Store is the config directory. It is safe for concurrent use.
type Store struct {
	dir string

	mu    sync.Mutex
	files map[string]*cachedFile // connection id → last parse (List, Consent)
	pause *cachedPause           // the pause switch as last parsed
}

// NewStore opens the config directory dir (it need not exist yet).
func NewStore(dir string) *Store {
	return &Store{dir: dir, files: map[string]*cachedFile{}}
}

// OpenDefault opens the directory Dir resolves.
func OpenDefault() (*Store, error) {
	d, err := Dir()
	if err != nil {
		return nil, err
	}
	return NewStore(d), nil
}

// Dir is the config directory.
func (s *Store) Dir() string { return s.dir }

// ConnectionsDir is <dir>/connections.
func (s *Store) ConnectionsDir() string { return filepath.Join(s.dir, connectionsDir) }

// Path is the credentials file of connection id.
func (s *Store) Path(id string) string { return filepath.Join(s.ConnectionsDir(), id+connExt) }

// LockPath is the instance-lock file of connection id.
func (s *Store) LockPath(id string) string { return filepath.Join(s.dir, locksDir, id+".lock") }

// LinkStatePath is where the running agent keeps connection id's live
// link state (connected, retrying with the last error, denied) for
// `opengeni-agent status`.
func (s *Store) LinkStatePath(id string) string { return filepath.Join(s.dir, "state", id+".json") }

// WriteLinkState stores connection id's live link state (JSON, 0600, in a
// 0700 directory, written atomically).
func (s *Store) WriteLinkState(id string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(s.LinkStatePath(id)), 0o700); err != nil {
		return err
	}
	return WriteFileAtomic(s.LinkStatePath(id), data)
}

// LegacyPath is the v1 single-connection credentials.json.
func (s *Store) LegacyPath() string { return filepath.Join(s.dir, legacyFile) }

// Save writes c as connection c.ID() atomically (temp file, fsync, rename)
// with mode 0600 in a 0700 directory, and returns the path. APIURL must be set.
func (s *Store) Save(c *Credentials) (string, error) {
	if c.APIURL == "" {
		return "", errEmptyAPIURL
	}
	n, err := NormalizeAPIURL(c.APIURL)
	if err != nil {
		return "", err
	}
	cp := *c
	cp.APIURL = n
	if err := validID("agent_id", cp.AgentID); err != nil {
		return "", err
	}
	if err := validID("workspace_id", cp.WorkspaceID); err != nil {
		return "", err
	}
	data, err := cp.Marshal()
	if err != nil {
		return "", err
	}
	path := s.Path(cp.ID())
	if err := ensurePrivateDir(s.ConnectionsDir()); err != nil {
		return "", err
	}
	if err := WriteFileAtomic(path, data); err != nil {
		return "", err
	}
	return path, nil
}

// Load reads connection id; ErrNotEnrolled when it does not exist.
func (s *Store) Load(id string) (*Credentials, error) {
	if !validConnID(id) {
		return nil, fmt.Errorf("%w: %q", ErrNoConnection, id)
	}
	return loadFile(s.Path(id))
}

// LoadLegacy reads the v1 credentials.json; ErrNotEnrolled when absent.
func (s *Store) LoadLegacy() (*Credentials, error) { return loadFile(s.LegacyPath()) }

func loadFile(path string) (*Credentials, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials %s: %w", path, err)
	}
	return ParseCredentials(path, data)
}

// List returns every stored connection sorted by id, including unreadable
// ones (with Err set). A missing directory is an empty list. A file is only
// parsed again when its stat changed since the last List or Consent, so
// the `run` supervisor's periodic reload costs a stat per connection.
func (s *Store) List() ([]Connection, error) {
	ents, err := os.ReadDir(s.ConnectionsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	var out []Connection
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, connExt) {
			continue
		}
		id := strings.TrimSuffix(name, connExt)
		if !validConnID(id) {
			continue
		}
		c := Connection{ID: id, Path: s.Path(id)}
		if e, err := s.loadCached(id); err != nil {
			c.Err = err
		} else {
			cp := *e.creds
			cp.NATSURLs = slices.Clone(cp.NATSURLs)
			c.Creds = &cp
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Enrolled reports whether at least one connection loads.
func (s *Store) Enrolled() bool {
	conns, err := s.List()
	if err != nil {
		return false
	}
	for _, c := range conns {
		if c.Err == nil {
			return true
		}
	}
	return false
}

// AmbiguousError is a Find reference that matches several connections.
type AmbiguousError struct {
	Ref string
	IDs []string
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("%q matches %d connections (%s); give more of the id", e.Ref, len(e.IDs), strings.Join(e.IDs, ", "))
}

// Find resolves a reference typed by the user: a full connection id, a
// unique id prefix, or else a workspace id or unique workspace id prefix.
func (s *Store) Find(ref string) (Connection, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return Connection{}, fmt.Errorf("%w: empty reference", ErrNoConnection)
	}
	conns, err := s.List()
	if err != nil {
		return Connection{}, err
	}
	pick := func(match func(Connection) bool) (Connection, bool, error) {
		var hits []Connection
		for _, c := range conns {
			if match(c) {
				hits = append(hits, c)
			}
		}
		switch len(hits) {
		case 0:
			return Connection{}, false, nil
		case 1:
			return hits[0], true, nil
		}
		ids := make([]string, len(hits))
		for i, h := range hits {
			ids[i] = h.ID
		}
		return Connection{}, false, &AmbiguousError{Ref: ref, IDs: ids}
	}
	matchers := []func(Connection) bool{
		func(c Connection) bool { return c.ID == ref },
		func(c Connection) bool { return strings.HasPrefix(c.ID, strings.ToLower(ref)) },
		func(c Connection) bool { return c.Creds != nil && c.Creds.WorkspaceID == ref },
		func(c Connection) bool { return c.Creds != nil && strings.HasPrefix(c.Creds.WorkspaceID, ref) },
	}
	for _, m := range matchers {
		c, ok, err := pick(m)
		if err != nil {
			return Connection{}, err
		}
		if ok {
			return c, nil
		}
	}
	return Connection{}, fmt.Errorf("%w matches %q", ErrNoConnection, ref)
}

// Remove deletes connection id's credentials file (ErrNotEnrolled when it
// does not exist). A runner serving it notices and stops.
func (s *Store) Remove(id string) error {
	if !validConnID(id) {
		return fmt.Errorf("%w: %q", ErrNoConnection, id)
	}
	err := os.Remove(s.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotEnrolled
	}
	s.mu.Lock()
	delete(s.files, id)
	s.mu.Unlock()
	return err
}

// MigrateLegacy moves a v1 credentials.json into connections/ as the
// connection to apiURL (the v1 file does not record its API). An existing
// connection with the same identity wins. The old file is renamed to
// credentials.json.migrated (still 0600) so an older binary's config is not
// silently lost. It returns the migrated connection id, or "" when there was
// nothing to migrate.
func (s *Store) MigrateLegacy(apiURL string) (string, error) {
	c, err := s.LoadLegacy()
	if errors.Is(err, ErrNotEnrolled) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if c.APIURL == "" {
		c.APIURL = apiURL
	}
	n, err := NormalizeAPIURL(c.APIURL)
	if err != nil {
		return "", err
	}
	c.APIURL = n
	id := c.ID()
	if _, err := s.Load(id); errors.Is(err, ErrNotEnrolled) {
		if _, err := s.Save(c); err != nil {
			return "", fmt.Errorf("migrate %s: %w", s.LegacyPath(), err)
		}
	}
	if err := os.Rename(s.LegacyPath(), s.LegacyPath()+".migrated"); err != nil {
		return "", fmt.Errorf("migrate %s: %w", s.LegacyPath(), err)
	}
	return id, nil
}

func validConnID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// ensurePrivateDir creates dir (and parents) and makes dir itself 0700.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if runtime.GOOS == "windows" {
		return nil // no mode bits; the profile directory's ACL applies
	}
	return os.Chmod(dir, 0o700)
}

// WriteFileAtomic replaces path with data: a 0600 temp file in the same
// directory, fsync, rename. Readers see the old or the new file, never a
// torn one; the secret is never world-readable, not even briefly. The
// rename replaces a symlink at path rather than following it.
func WriteFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		f.Close()
		return err
	}
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return renameReplace(tmp, path)
}

// renameReplace renames over an existing file. On Windows a reader holding
// the target open (a live consent read) makes the rename fail briefly with
// a sharing violation, so it is retried for up to a second.
func renameReplace(from, to string) error {
	err := os.Rename(from, to)
	for i := 0; err != nil && runtime.GOOS == "windows" && i < 20; i++ {
		time.Sleep(50 * time.Millisecond)
		err = os.Rename(from, to)
	}
	return err
}
