package update

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/zeebo/blake3"
)

// Manifest is the signed channel manifest of agent.md §7, served at
// <base>/agent/<channel>/manifest.json with a detached .minisig beside it.
type Manifest struct {
	Channel        string     `json:"channel"`
	Version        string     `json:"version"`
	MinSupported   string     `json:"min_supported"`
	RolloutPercent int        `json:"rollout_percent"`
	CohortSalt     string     `json:"cohort_salt"`
	Artifacts      []Artifact `json:"artifacts"`
	NotesURL       string     `json:"notes_url"`
	SignedAtMS     int64      `json:"signed_at_ms"`
	Force          bool       `json:"force"`
}

// Artifact is one target's build in a Manifest. URL and MinisigURL may be
// relative to the manifest's own URL.
type Artifact struct {
	Target     string `json:"target"`
	URL        string `json:"url"`
	SHA256     string `json:"sha256"`
	MinisigURL string `json:"minisig_url"`
	Size       int64  `json:"size"`
}

// ParseManifest decodes manifest JSON, applying the defaults of §7
// (rollout_percent 100) and rejecting a manifest without its required keys.
func ParseManifest(data []byte) (*Manifest, error) {
	var raw struct {
		Manifest
		RolloutPercent *int `json:"rollout_percent"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	m := raw.Manifest
	m.RolloutPercent = 100
	if raw.RolloutPercent != nil {
		m.RolloutPercent = *raw.RolloutPercent
	}
	switch {
	case m.Channel == "":
		return nil, fmt.Errorf("%w: missing channel", ErrManifest)
	case m.Version == "":
		return nil, fmt.Errorf("%w: missing version", ErrManifest)
	case m.MinSupported == "":
		return nil, fmt.Errorf("%w: missing min_supported", ErrManifest)
	case m.Artifacts == nil:
		return nil, fmt.Errorf("%w: missing artifacts", ErrManifest)
	}
	for i, a := range m.Artifacts {
		if a.Target == "" || a.URL == "" || a.SHA256 == "" || a.MinisigURL == "" {
			return nil, fmt.Errorf("%w: artifact %d lacks target, url, sha256 or minisig_url", ErrManifest, i)
		}
	}
	return &m, nil
}

// ArtifactFor returns the artifact built for target.
func (m *Manifest) ArtifactFor(target string) (Artifact, error) {
	for _, a := range m.Artifacts {
		if a.Target == target {
			return a, nil
		}
	}
	return Artifact{}, fmt.Errorf("%w: no artifact for target %s in the manifest", ErrNoArtifact, target)
}

// RolloutBucket is the agent's cohort bucket in [0,100): the first 8 bytes
// of blake3(agent_id ‖ cohort_salt), read as a little-endian uint64, mod 100.
func RolloutBucket(agentID, salt string) int {
	sum := blake3.Sum256([]byte(agentID + salt))
	return int(binary.LittleEndian.Uint64(sum[:8]) % 100)
}

// InRollout reports whether agentID is in a rollout staged at percent:
// ≥100 always, ≤0 never, else iff its bucket < percent (deterministic per
// agent and salt, and monotone in percent: once in, it stays in).
func InRollout(agentID, salt string, percent int) bool {
	if percent >= 100 {
		return true
	}
	if percent <= 0 {
		return false
	}
	return RolloutBucket(agentID, salt) < percent
}
