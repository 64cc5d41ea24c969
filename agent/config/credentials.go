package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Credentials is one connection's credentials file. The JSON keys are the
// reference agent's (agent.md §1.2), so a v1 credentials.json reads as a
// connection; APIURL is the multi-connection addition (§9).
type Credentials struct {
	AgentID                string   `json:"agent_id"`
	WorkspaceID            string   `json:"workspace_id"`
	NATSBearer             string   `json:"nats_bearer"` // the oge_ connect token; a secret
	NATSURLs               []string `json:"nats_urls"`
	RelayURL               string   `json:"relay_url"`
	RelayToken             string   `json:"relay_token"` // the ogr_ producer token; a secret
	UpdatePubkey           string   `json:"update_pubkey"`
	ConsentedWholeMachine  bool     `json:"consented_whole_machine"`
	ConsentedScreenControl bool     `json:"consented_screen_control"`
	UpdateChannel          string   `json:"update_channel"`
	ResumeToken            string   `json:"resume_token"`
	LastKnownEpoch         uint32   `json:"last_known_epoch"`

	// APIURL is the normalized API origin the connection was enrolled
	// against; with WorkspaceID it is the connection's identity. Empty in a
	// v1 file until migrated.
	APIURL string `json:"api_url,omitempty"`
}

// ID is the connection id of these credentials (see ConnectionID).
func (c *Credentials) ID() string { return ConnectionID(c.APIURL, c.WorkspaceID) }

// Subject is agent.<workspace>.<agent>.<suffix>.
func (c *Credentials) Subject(suffix string) string {
	return "agent." + c.WorkspaceID + "." + c.AgentID + "." + suffix
}

// MalformedError is a credentials file that is not valid JSON or misses a
// required key.
type MalformedError struct {
	Path string
	Err  error
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("malformed credentials file at %s: %v", e.Path, e.Err)
}

func (e *MalformedError) Unwrap() error { return e.Err }

// fileCredentials tells a missing key from a zero value.
type fileCredentials struct {
	AgentID                *string   `json:"agent_id"`
	WorkspaceID            *string   `json:"workspace_id"`
	NATSBearer             *string   `json:"nats_bearer"`
	NATSCredentials        *string   `json:"nats_credentials"` // legacy alias of nats_bearer
	NATSURLs               *[]string `json:"nats_urls"`
	RelayURL               *string   `json:"relay_url"`
	RelayToken             *string   `json:"relay_token"`
	UpdatePubkey           *string   `json:"update_pubkey"`
	ConsentedWholeMachine  *bool     `json:"consented_whole_machine"`
	ConsentedScreenControl *bool     `json:"consented_screen_control"`
	UpdateChannel          *string   `json:"update_channel"`
	ResumeToken            *string   `json:"resume_token"`
	LastKnownEpoch         *uint32   `json:"last_known_epoch"`
	APIURL                 *string   `json:"api_url"`
}

// ParseCredentials decodes a credentials file. nats_credentials is accepted
// for nats_bearer; relay_token, update_channel ("stable"), resume_token and
// last_known_epoch default when missing; every other key is required.
// Unknown keys are ignored. path only labels errors.
func ParseCredentials(path string, data []byte) (*Credentials, error) {
	var f fileCredentials
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, &MalformedError{Path: path, Err: err}
	}
	if f.NATSBearer == nil {
		f.NATSBearer = f.NATSCredentials
	}
	missing := func(key string) error {
		return &MalformedError{Path: path, Err: fmt.Errorf("missing field `%s`", key)}
	}
	switch {
	case f.AgentID == nil:
		return nil, missing("agent_id")
	case f.WorkspaceID == nil:
		return nil, missing("workspace_id")
	case f.NATSBearer == nil:
		return nil, missing("nats_bearer")
	case f.NATSURLs == nil:
		return nil, missing("nats_urls")
	case f.RelayURL == nil:
		return nil, missing("relay_url")
	case f.UpdatePubkey == nil:
		return nil, missing("update_pubkey")
	case f.ConsentedWholeMachine == nil:
		return nil, missing("consented_whole_machine")
	case f.ConsentedScreenControl == nil:
		return nil, missing("consented_screen_control")
	}
	c := &Credentials{
		AgentID:                *f.AgentID,
		WorkspaceID:            *f.WorkspaceID,
		NATSBearer:             *f.NATSBearer,
		NATSURLs:               *f.NATSURLs,
		RelayURL:               *f.RelayURL,
		UpdatePubkey:           *f.UpdatePubkey,
		ConsentedWholeMachine:  *f.ConsentedWholeMachine,
		ConsentedScreenControl: *f.ConsentedScreenControl,
		UpdateChannel:          "stable",
	}
	if f.RelayToken != nil {
		c.RelayToken = *f.RelayToken
	}
	if f.UpdateChannel != nil {
		c.UpdateChannel = *f.UpdateChannel
	}
	if f.ResumeToken != nil {
		c.ResumeToken = *f.ResumeToken
	}
	if f.LastKnownEpoch != nil {
		c.LastKnownEpoch = *f.LastKnownEpoch
	}
	if f.APIURL != nil {
		c.APIURL = *f.APIURL
	}
	if c.NATSURLs == nil {
		c.NATSURLs = []string{}
	}
	if err := validID("agent_id", c.AgentID); err != nil {
		return nil, &MalformedError{Path: path, Err: err}
	}
	if err := validID("workspace_id", c.WorkspaceID); err != nil {
		return nil, &MalformedError{Path: path, Err: err}
	}
	return c, nil
}

// Marshal renders the file: pretty-printed, snake_case keys.
func (c *Credentials) Marshal() ([]byte, error) {
	cp := *c
	if cp.NATSURLs == nil {
		cp.NATSURLs = []string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&cp); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// validID: ids become NATS subject tokens and must not be empty or carry
// wildcards, separators or whitespace.
func validID(key, v string) error {
	if v == "" {
		return fmt.Errorf("%s is empty", key)
	}
	if strings.ContainsAny(v, ".*> \t\r\n/\\") {
		return fmt.Errorf("%s %q is not a valid subject token", key, v)
	}
	return nil
}

// NormalizeAPIURL reduces an API URL to its identity: lowercase scheme and
// host, the default port dropped, no query or fragment, no trailing slash
// ("https://API.opengeni.ai:443/" → "https://api.opengeni.ai"). A non-root
// path is kept, so two deployments under one host stay distinct.
func NormalizeAPIURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid API URL %q: %w", raw, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "https" && scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("invalid API URL %q: want http(s)://host[:port]", raw)
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host + strings.TrimRight(u.EscapedPath(), "/"), nil
}

var errEmptyAPIURL = errors.New("connection has no API URL")
