// Package publish lays out a signed release directory: artifacts with their
// .sha256 and .minisig, SHA256SUMS, the signed channel manifest of agent.md
// §7 and the install scripts stamped with the release public key. The
// release command (internal/cmd/release) builds the binaries and calls it;
// tests call it with binaries they built themselves.
package publish

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"aead.dev/minisign"

	"github.com/opengeni/opengeni-agent/agent/update"
)

// Key is a minisign signing key.
type Key struct {
	priv minisign.PrivateKey
	pub  minisign.PublicKey
}

// LoadKey reads a minisign secret key file. An encrypted key (the minisign
// CLI default) needs password; an unencrypted one ignores it.
func LoadKey(file, password string) (*Key, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var priv minisign.PrivateKey
	if minisign.IsEncrypted(raw) {
		if priv, err = minisign.DecryptKey(password, raw); err != nil {
			return nil, fmt.Errorf("decrypt %s: %w", file, err)
		}
	} else if err := priv.UnmarshalText(raw); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	pub, ok := priv.Public().(minisign.PublicKey)
	if !ok {
		return nil, errors.New("minisign: unexpected public key type")
	}
	return &Key{priv: priv, pub: pub}, nil
}

// PublicKeyLine is the base64 public key line (the form pinned in scripts
// and in update.PublicKey).
func (k *Key) PublicKeyLine() string {
	t, _ := k.pub.MarshalText()
	lines := strings.Split(strings.TrimSpace(string(t)), "\n")
	return lines[len(lines)-1]
}

// PublicKeyFile is the .pub file text.
func (k *Key) PublicKeyFile() string {
	return fmt.Sprintf("untrusted comment: minisign public key %016X\n%s\n", k.pub.ID(), k.PublicKeyLine())
}

// Sign returns a prehashed ("ED") minisign signature of data.
func (k *Key) Sign(data []byte, trustedComment string) []byte {
	r := minisign.NewReader(bytes.NewReader(data))
	_, _ = io.Copy(io.Discard, r) // reading feeds the hash; a bytes.Reader cannot fail
	return r.SignWithComments(k.priv, trustedComment, fmt.Sprintf("signature from minisign secret key %016X", k.priv.ID()))
}

// TestKeyFile is the committed TEST-ONLY secret key (see testdata/README.md).
// It exists for tests in other packages; it only resolves in a source tree.
func TestKeyFile() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "TEST-ONLY-minisign.key")
}

// Release describes one release directory.
type Release struct {
	Dir          string            // output root (gets agent/..., install.sh, ...)
	Version      string            // semver without "v"
	Channel      string            // default "stable"
	MinSupported string            // default "0.0.0"
	Rollout      int               // rollout_percent; default 100 (use -1 for 0%)
	Salt         string            // cohort_salt; default "v"+Version
	NotesURL     string            // optional
	BaseURL      string            // absolute artifact URLs when set; else relative to the manifest
	Artifacts    map[string]string // target → built binary path
	Latest       bool              // also copy the artifacts to agent/latest/
	InstallersIn string            // directory with install.sh, install.ps1, uninstall.sh (optional)
	Key          *Key
	Now          func() time.Time  // default time.Now
	Progress     func(line string) // called as each step starts; nil is silent
}

// say reports one step.
func (r Release) say(format string, args ...any) {
	if r.Progress != nil {
		r.Progress(fmt.Sprintf(format, args...))
	}
}

// Write lays out r and returns the manifest it signed.
func Write(r Release) (*update.Manifest, error) {
	if r.Key == nil || r.Version == "" || len(r.Artifacts) == 0 {
		return nil, errors.New("publish: Key, Version and Artifacts are required")
	}
	if r.Channel == "" {
		r.Channel = "stable"
	}
	if r.MinSupported == "" {
		r.MinSupported = "0.0.0"
	}
	switch {
	case r.Rollout == 0:
		r.Rollout = 100
	case r.Rollout < 0:
		r.Rollout = 0
	}
	if r.Salt == "" {
		r.Salt = "v" + r.Version
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	verDir := filepath.Join(r.Dir, "agent", "v"+r.Version)
	dirs := []string{verDir}
	if r.Latest {
		dirs = append(dirs, filepath.Join(r.Dir, "agent", "latest"))
	}
	for _, d := range append(dirs, filepath.Join(r.Dir, "agent", r.Channel)) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	targets := make([]string, 0, len(r.Artifacts))
	for t := range r.Artifacts {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	m := &update.Manifest{
		Channel: r.Channel, Version: r.Version, MinSupported: r.MinSupported,
		RolloutPercent: r.Rollout, CohortSalt: r.Salt, NotesURL: r.NotesURL,
		SignedAtMS: r.Now().UnixMilli(), Artifacts: []update.Artifact{},
	}
	var sums strings.Builder
	for _, t := range targets {
		data, err := os.ReadFile(r.Artifacts[t])
		if err != nil {
			return nil, err
		}
		asset := update.AssetName(t)
		r.say("signing %s (%.1f MB)", asset, float64(len(data))/(1<<20))
		sum := sha256.Sum256(data)
		hexsum := hex.EncodeToString(sum[:])
		sig := r.Key.Sign(data, fmt.Sprintf("timestamp:%d\tfile:%s\tversion:%s", r.Now().Unix(), asset, r.Version))
		for _, d := range dirs {
			if err := writeFiles(d, map[string][]byte{
				asset:              data,
				asset + ".sha256":  []byte(hexsum + "  " + asset + "\n"),
				asset + ".minisig": sig,
			}); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&sums, "%s  %s\n", hexsum, asset)
		u := "../v" + r.Version + "/" + asset
		if r.BaseURL != "" {
			u = strings.TrimRight(r.BaseURL, "/") + "/" + path.Join("agent", "v"+r.Version, asset)
		}
		m.Artifacts = append(m.Artifacts, update.Artifact{Target: t, URL: u, SHA256: hexsum, MinisigURL: u + ".minisig", Size: int64(len(data))})
	}
	sumsData := []byte(sums.String())
	r.say("writing SHA256SUMS (signed) into %s", strings.Join(dirs, ", "))
	for _, d := range dirs {
		if err := writeFiles(d, map[string][]byte{
			"SHA256SUMS":         sumsData,
			"SHA256SUMS.minisig": r.Key.Sign(sumsData, fmt.Sprintf("timestamp:%d\tfile:SHA256SUMS\tversion:%s", r.Now().Unix(), r.Version)),
		}); err != nil {
			return nil, err
		}
	}
	r.say("writing manifest %s (signed, version %s, %d artifacts)", filepath.Join(r.Dir, "agent", r.Channel, "manifest.json"), r.Version, len(m.Artifacts))
	if err := WriteManifest(filepath.Join(r.Dir, "agent", r.Channel), m, r.Key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "opengeni-agent-minisign.pub"), []byte(r.Key.PublicKeyFile()), 0o644); err != nil {
		return nil, err
	}
	if r.InstallersIn != "" {
		r.say("writing install.sh, install.ps1, uninstall.sh (pinned to key %s)", r.Key.PublicKeyLine())
		for _, name := range []string{"install.sh", "install.ps1", "uninstall.sh"} {
			src, err := os.ReadFile(filepath.Join(r.InstallersIn, name))
			if err != nil {
				return nil, err
			}
			out, err := StampPublicKey(src, r.Key.PublicKeyLine())
			if err != nil && name != "uninstall.sh" {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if err != nil {
				out = src // uninstall.sh pins no key
			}
			if err := os.WriteFile(filepath.Join(r.Dir, name), out, 0o755); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// WriteManifest writes manifest.json and manifest.json.minisig into dir.
func WriteManifest(dir string, m *update.Manifest, key *Key) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return writeFiles(dir, map[string][]byte{
		"manifest.json":         data,
		"manifest.json.minisig": key.Sign(data, fmt.Sprintf("timestamp:%d\tfile:manifest.json\tchannel:%s\tversion:%s", m.SignedAtMS/1000, m.Channel, m.Version)),
	})
}

var (
	shPin = regexp.MustCompile(`(?m)^OPENGENI_PINNED_PUBKEY='[^']*'`)
	psPin = regexp.MustCompile(`(?m)^\$PinnedPubKey = '[^']*'`)
	keyRE = regexp.MustCompile(`^[A-Za-z0-9+/=]+$`)
)

// StampPublicKey rewrites the pinned key line of install.sh
// (OPENGENI_PINNED_PUBKEY='...') or install.ps1 ($PinnedPubKey = '...').
// It fails when the script has no pin line, so a script can never be
// published pinning a key other than the release key.
func StampPublicKey(script []byte, pub string) ([]byte, error) {
	if !keyRE.MatchString(pub) {
		return nil, fmt.Errorf("not a minisign public key line: %q", pub)
	}
	switch {
	case shPin.Match(script):
		return shPin.ReplaceAll(script, []byte("OPENGENI_PINNED_PUBKEY='"+pub+"'")), nil
	case psPin.Match(script):
		return psPin.ReplaceAllLiteral(script, []byte("$PinnedPubKey = '"+pub+"'")), nil
	}
	return nil, errors.New("no pinned public key line to stamp")
}

func writeFiles(dir string, files map[string][]byte) error {
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
