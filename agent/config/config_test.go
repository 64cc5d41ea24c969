package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func sample() *Credentials {
	return &Credentials{
		AgentID:                "agent-123",
		WorkspaceID:            "ws-abc",
		NATSBearer:             "oge_secret",
		NATSURLs:               []string{"wss://nats.example:8443"},
		RelayURL:               "wss://relay.example/stream",
		RelayToken:             "ogr_producer",
		UpdatePubkey:           "RWQkey",
		ConsentedWholeMachine:  true,
		ConsentedScreenControl: false,
		UpdateChannel:          "beta",
		APIURL:                 "https://api.opengeni.ai",
	}
}

func TestDirFrom(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
		err  bool
	}{
		{"override verbatim", map[string]string{"OPENGENI_CONFIG_DIR": "/x/y", "XDG_CONFIG_HOME": "/xdg", "HOME": "/h"}, "/x/y", false},
		{"xdg", map[string]string{"XDG_CONFIG_HOME": "/xdg", "HOME": "/h"}, filepath.Join("/xdg", "opengeni", "agent"), false},
		{"home", map[string]string{"HOME": "/h"}, filepath.Join("/h", ".config", "opengeni", "agent"), false},
		{"userprofile", map[string]string{"USERPROFILE": `C:\Users\u`}, filepath.Join(`C:\Users\u`, ".config", "opengeni", "agent"), false},
		{"empty xdg falls through", map[string]string{"XDG_CONFIG_HOME": "", "HOME": "/h"}, filepath.Join("/h", ".config", "opengeni", "agent"), false},
		{"nothing", map[string]string{}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DirFrom(func(k string) string { return tt.env[k] })
			if tt.err {
				if !errors.Is(err, ErrNoConfigDir) {
					t.Fatalf("err = %v, want ErrNoConfigDir", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DirFrom = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSaveThenLoadRoundtrips(t *testing.T) {
	s := NewStore(t.TempDir())
	c := sample()
	c.ResumeToken = "resume-deadbeef"
	c.LastKnownEpoch = 7
	path, err := s.Save(c)
	if err != nil {
		t.Fatal(err)
	}
	if path != s.Path(c.ID()) {
		t.Fatalf("path %s, want %s", path, s.Path(c.ID()))
	}
	got, err := s.Load(c.ID())
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := c.Marshal()
	b2, _ := got.Marshal()
	if string(b1) != string(b2) {
		t.Fatalf("roundtrip:\n%s\n!=\n%s", b1, b2)
	}
	if got.ResumeToken != "resume-deadbeef" || got.LastKnownEpoch != 7 {
		t.Fatalf("resume/epoch not preserved: %+v", got)
	}
}

func TestLoadAbsentIsNotEnrolled(t *testing.T) {
	s := NewStore(t.TempDir())
	if _, err := s.Load("0123456789abcdef"); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("Load = %v, want ErrNotEnrolled", err)
	}
	if _, err := s.LoadLegacy(); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("LoadLegacy = %v, want ErrNotEnrolled", err)
	}
	conns, err := s.List()
	if err != nil || len(conns) != 0 || s.Enrolled() {
		t.Fatalf("List = %v, %v; Enrolled %v", conns, err, s.Enrolled())
	}
}

func TestSavedFileIs0600AndDir0700(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no unix mode bits")
	}
	s := NewStore(filepath.Join(t.TempDir(), "cfg"))
	path, err := s.Save(sample())
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %o, want 600", st.Mode().Perm())
	}
	dst, _ := os.Stat(s.ConnectionsDir())
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %o, want 700", dst.Mode().Perm())
	}
	// A pre-existing, too-open connections dir is tightened; rewrites stay 0600.
	_ = os.Chmod(s.ConnectionsDir(), 0o755)
	if err := s.SetScreenControl(sample().ID(), true); err != nil {
		t.Fatal(err)
	}
	st, _ = os.Stat(path)
	dst, _ = os.Stat(s.ConnectionsDir())
	if st.Mode().Perm() != 0o600 || dst.Mode().Perm() != 0o700 {
		t.Fatalf("after rewrite: file %o dir %o", st.Mode().Perm(), dst.Mode().Perm())
	}
	// No temp files are left behind.
	ents, _ := os.ReadDir(s.ConnectionsDir())
	if len(ents) != 1 {
		t.Fatalf("connections dir holds %d entries, want 1", len(ents))
	}
}

func TestParseCredentials(t *testing.T) {
	full := `{"agent_id":"a","workspace_id":"w","nats_bearer":"oge_b","nats_urls":["nats://x"],"relay_url":"r",
		"update_pubkey":"k","consented_whole_machine":true,"consented_screen_control":true,"extra":1}`
	tests := []struct {
		name  string
		json  string
		check func(*testing.T, *Credentials)
		err   string
	}{
		{"defaults", full, func(t *testing.T, c *Credentials) {
			if c.RelayToken != "" || c.UpdateChannel != "stable" || c.ResumeToken != "" || c.LastKnownEpoch != 0 {
				t.Fatalf("defaults wrong: %+v", c)
			}
			if c.NATSBearer != "oge_b" || !c.ConsentedScreenControl {
				t.Fatalf("fields wrong: %+v", c)
			}
		}, ""},
		{"legacy nats_credentials is the bearer", strings.Replace(full, `"nats_bearer"`, `"nats_credentials"`, 1), func(t *testing.T, c *Credentials) {
			if c.NATSBearer != "oge_b" {
				t.Fatalf("bearer %q", c.NATSBearer)
			}
		}, ""},
		{"missing bearer", strings.Replace(full, `"nats_bearer":"oge_b",`, "", 1), nil, "missing field `nats_bearer`"},
		{"missing consent", strings.Replace(full, `"consented_screen_control":true,`, "", 1), nil, "missing field `consented_screen_control`"},
		{"missing urls", strings.Replace(full, `"nats_urls":["nats://x"],`, "", 1), nil, "missing field `nats_urls`"},
		{"bad json", `{"agent_id":`, nil, "malformed credentials file at p"},
		{"wildcard id", strings.Replace(full, `"agent_id":"a"`, `"agent_id":"a.>"`, 1), nil, "not a valid subject token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCredentials("p", []byte(tt.json))
			if tt.err != "" {
				var me *MalformedError
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.As(err, &me) {
					t.Fatalf("err = %v, want MalformedError containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestMarshalUsesSnakeCaseKeys(t *testing.T) {
	b, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"agent_id", "workspace_id", "nats_bearer", "nats_urls", "relay_url", "relay_token", "update_pubkey",
		"consented_whole_machine", "consented_screen_control", "update_channel", "resume_token", "last_known_epoch", "api_url"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %s missing from %s", k, b)
		}
	}
	if !strings.Contains(string(b), "\n  \"agent_id\"") {
		t.Errorf("not pretty-printed: %s", b)
	}
}

func TestSubjectsAreWorkspaceAndAgentScoped(t *testing.T) {
	c := &Credentials{WorkspaceID: "ws-abc", AgentID: "agent-123"}
	if got := c.Subject("rpc"); got != "agent.ws-abc.agent-123.rpc" {
		t.Fatal(got)
	}
	if got := c.Subject("events"); got != "agent.ws-abc.agent-123.events" {
		t.Fatal(got)
	}
}

func TestNormalizeAPIURLAndIdentity(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://api.opengeni.ai", "https://api.opengeni.ai"},
		{"https://API.OpenGeni.ai/", "https://api.opengeni.ai"},
		{"https://api.opengeni.ai:443//", "https://api.opengeni.ai"},
		{"http://localhost:80", "http://localhost"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
		{"https://host/base/?q=1#f", "https://host/base"},
		{"http://[::1]:9000", "http://[::1]:9000"},
	}
	for _, tt := range tests {
		got, err := NormalizeAPIURL(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeAPIURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "api.opengeni.ai", "ftp://x", "https://"} {
		if _, err := NormalizeAPIURL(bad); err == nil {
			t.Errorf("NormalizeAPIURL(%q) accepted", bad)
		}
	}
	a := ConnectionID("https://API.opengeni.ai:443/", "ws-1")
	if a != ConnectionID("https://api.opengeni.ai", "ws-1") || len(a) != 16 {
		t.Fatalf("equivalent URLs give different ids: %s", a)
	}
	if a == ConnectionID("https://api.opengeni.ai", "ws-2") || a == ConnectionID("https://other.example", "ws-1") {
		t.Fatal("distinct identities share an id")
	}
}

func TestOneFilePerConnectionListFindRemove(t *testing.T) {
	s := NewStore(t.TempDir())
	a := sample()
	b := sample()
	b.WorkspaceID = "ws-b"
	c := sample()
	c.APIURL = "https://staging.example"
	for _, x := range []*Credentials{a, b, c} {
		if _, err := s.Save(x); err != nil {
			t.Fatal(err)
		}
	}
	// Re-enrolling the same identity overwrites, not duplicates.
	a2 := sample()
	a2.APIURL = "https://api.opengeni.ai/"
	a2.NATSBearer = "oge_new"
	if _, err := s.Save(a2); err != nil {
		t.Fatal(err)
	}
	// A malformed file is listed with its error.
	if err := os.WriteFile(s.Path("ffffffffffffffff"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(s.ConnectionsDir(), "notes.txt"), []byte("x"), 0o600)
	conns, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 4 {
		t.Fatalf("List = %d entries, want 4", len(conns))
	}
	var bad int
	for _, cn := range conns {
		if cn.Err != nil {
			bad++
			continue
		}
		if cn.ID == a.ID() && cn.Creds.NATSBearer != "oge_new" {
			t.Fatal("overwrite lost")
		}
	}
	if bad != 1 {
		t.Fatalf("%d malformed, want 1", bad)
	}

	tests := []struct {
		ref     string
		want    string
		errIs   error
		errType bool
	}{
		{a.ID(), a.ID(), nil, false},
		{b.ID()[:6], b.ID(), nil, false},
		{"ws-b", b.ID(), nil, false},
		{"ws-abc", "", nil, true}, // a and c share the workspace id
		{"nope", "", ErrNoConnection, false},
		{"", "", ErrNoConnection, false},
	}
	for _, tt := range tests {
		got, err := s.Find(tt.ref)
		switch {
		case tt.errType:
			var ae *AmbiguousError
			if !errors.As(err, &ae) {
				t.Errorf("Find(%q) err = %v, want AmbiguousError", tt.ref, err)
			}
		case tt.errIs != nil:
			if !errors.Is(err, tt.errIs) {
				t.Errorf("Find(%q) err = %v, want %v", tt.ref, err, tt.errIs)
			}
		default:
			if err != nil || got.ID != tt.want {
				t.Errorf("Find(%q) = %s, %v; want %s", tt.ref, got.ID, err, tt.want)
			}
		}
	}
	if err := s.Remove(b.ID()); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(b.ID()); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("second Remove = %v", err)
	}
	if err := s.Remove("../../etc"); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("Remove of a path = %v", err)
	}
	if _, err := s.Save(&Credentials{AgentID: "a", WorkspaceID: "w"}); err == nil {
		t.Fatal("Save without an API URL accepted")
	}
}

func TestMigrateLegacy(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir)
	legacy := `{"agent_id":"a1","workspace_id":"w1","nats_credentials":"oge_b","nats_urls":["wss://n"],"relay_url":"",
		"update_pubkey":"","consented_whole_machine":true,"consented_screen_control":true,"resume_token":"r","last_known_epoch":3}`
	if err := os.WriteFile(s.LegacyPath(), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := s.MigrateLegacy("https://api.opengeni.ai/")
	if err != nil {
		t.Fatal(err)
	}
	if id != ConnectionID("https://api.opengeni.ai", "w1") {
		t.Fatalf("id %s", id)
	}
	c, err := s.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATSBearer != "oge_b" || c.APIURL != "https://api.opengeni.ai" || c.LastKnownEpoch != 3 || c.ResumeToken != "r" || !c.ConsentedScreenControl {
		t.Fatalf("migrated %+v", c)
	}
	if _, err := os.Stat(s.LegacyPath()); !os.IsNotExist(err) {
		t.Fatal("legacy file still in place")
	}
	if _, err := os.Stat(s.LegacyPath() + ".migrated"); err != nil {
		t.Fatal(err)
	}
	if id, err := s.MigrateLegacy("https://api.opengeni.ai"); id != "" || err != nil {
		t.Fatalf("second migrate = %q, %v", id, err)
	}
	// A malformed legacy file is reported, not migrated.
	_ = os.WriteFile(s.LegacyPath(), []byte("nope"), 0o600)
	if _, err := s.MigrateLegacy("https://api.opengeni.ai"); err == nil || !strings.Contains(err.Error(), "malformed credentials file") {
		t.Fatalf("malformed migrate = %v", err)
	}
}

func TestConsentIsReadLive(t *testing.T) {
	s := NewStore(t.TempDir())
	c := sample()
	if _, err := s.Save(c); err != nil {
		t.Fatal(err)
	}
	id := c.ID()
	steps := []struct {
		name           string
		act            func()
		whole, control bool
	}{
		{"initial", func() {}, true, false},
		{"consent on", func() { must(t, s.SetScreenControl(id, true)) }, true, true},
		{"cached read", func() {}, true, true},
		{"consent off", func() { must(t, s.SetScreenControl(id, false)) }, true, false},
		{"rewritten by another process, mtime pinned back", func() {
			other := NewStore(s.Dir())
			must(t, other.SetScreenControl(id, true))
			// Pin the mtime back: a rename to a new inode is still seen.
			st, _ := os.Stat(s.Path(id))
			_ = os.Chtimes(s.Path(id), st.ModTime(), st.ModTime())
		}, true, true},
		{"in-place edit, mtime moved", func() {
			cc, _ := s.Load(id)
			cc.ConsentedScreenControl = false
			b, _ := cc.Marshal()
			must(t, os.WriteFile(s.Path(id), b, 0o600))
			future := time.Now().Add(time.Hour)
			_ = os.Chtimes(s.Path(id), future, future)
		}, true, false},
		{"re-enable", func() { must(t, s.SetScreenControl(id, true)) }, true, true},
		{"file removed fails closed", func() { must(t, os.Remove(s.Path(id))) }, true, false},
	}
	for _, st := range steps {
		st.act()
		w, sc := s.Consent(id)
		if w != st.whole || sc != st.control {
			t.Fatalf("%s: Consent = (%v,%v), want (%v,%v)", st.name, w, sc, st.whole, st.control)
		}
	}
	if w, sc := s.Consent("0000000000000000"); w || sc {
		t.Fatal("unknown connection has consent")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestInstallIdentity(t *testing.T) {
	s := NewStore(filepath.Join(t.TempDir(), "cfg"))
	id1, err := s.Identity()
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if id1.PublicKey() != id2.PublicKey() {
		t.Fatal("install public key is not stable across loads")
	}
	if len(id1.PublicKey()) != 43 || strings.ContainsAny(id1.PublicKey(), "=-_") {
		t.Fatalf("public key %q: want 43 chars of unpadded standard base64", id1.PublicKey())
	}
	if runtime.GOOS != "windows" {
		st, _ := os.Stat(s.IdentityPath())
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("identity mode %o", st.Mode().Perm())
		}
	}
	fresh, _ := GenerateIdentity()
	if fresh.PublicKey() == id1.PublicKey() {
		t.Fatal("distinct identities share a key")
	}
	sig := id1.Sign([]byte("prove-possession"))
	if !VerifySignature(id1.PublicKey(), []byte("prove-possession"), sig) {
		t.Fatal("signature does not verify")
	}
	if VerifySignature(fresh.PublicKey(), []byte("prove-possession"), sig) || VerifySignature(id1.PublicKey(), []byte("other"), sig) {
		t.Fatal("signature verifies under the wrong key or message")
	}
	_ = os.WriteFile(s.IdentityPath(), []byte("garbage"), 0o600)
	if _, err := s.Identity(); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("corrupt identity: %v", err)
	}
}
