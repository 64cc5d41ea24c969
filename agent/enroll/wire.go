// Package enroll pairs this machine with a workspace over the control
// plane's JSON enrollment API (agent.md §2, control.md §6.2/§6.3): the
// device flow (start, print a code, poll until a user approves) and the
// zero-click enroll-token exchange. It returns the credentials; persisting
// them is the caller's job (agent/config).
package enroll

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/internal/enrollwire"
)

// API paths, joined to the API base URL.
const (
	PathDeviceStart   = enrollwire.PathDeviceStart
	PathDevicePoll    = enrollwire.PathDevicePoll
	PathTokenExchange = enrollwire.PathTokenExchange
)

// DefaultIntervalSeconds is the poll interval when the server names none.
const DefaultIntervalSeconds = enrollwire.DefaultIntervalSeconds

// The wire bodies, shared with the control plane's API (internal/enrollwire).
type (
	StartRequest     = enrollwire.StartRequest
	StartResponse    = enrollwire.StartResponse
	PollRequest      = enrollwire.PollRequest
	State            = enrollwire.State
	PollResponse     = enrollwire.PollResponse
	ExchangeRequest  = enrollwire.ExchangeRequest
	ExchangeResponse = enrollwire.ExchangeResponse
	Credentials      = enrollwire.Credentials
)

// Poll states.
const (
	StatePending    = enrollwire.StatePending
	StateAuthorized = enrollwire.StateAuthorized
	StateDenied     = enrollwire.StateDenied
	StateExpired    = enrollwire.StateExpired
	StateDisabled   = enrollwire.StateDisabled
	StateSlowDown   = enrollwire.StateSlowDown
)

// StoredCredentials converts wire credentials to the stored form for the
// connection to apiURL: update_channel = channel, empty resume token,
// epoch 0. subjectPrefix and natsAccountCreds are not kept.
func StoredCredentials(c *Credentials, apiURL, channel string) *config.Credentials {
	if channel == "" {
		channel = "stable"
	}
	urls := c.NATSURLs
	if urls == nil {
		urls = []string{}
	}
	return &config.Credentials{
		AgentID:                c.AgentID,
		WorkspaceID:            c.WorkspaceID,
		NATSBearer:             c.Bearer,
		NATSURLs:               urls,
		RelayURL:               c.RelayURL,
		RelayToken:             c.RelayToken,
		UpdatePubkey:           c.UpdatePublicKey,
		ConsentedWholeMachine:  c.ConsentedWholeMachine,
		ConsentedScreenControl: c.ConsentedScreenControl,
		UpdateChannel:          channel,
		APIURL:                 apiURL,
	}
}

func validateCredentials(c *Credentials) error {
	if c.AgentID == "" || c.WorkspaceID == "" {
		return fmt.Errorf("server returned credentials without agentId or workspaceId")
	}
	if strings.ContainsAny(c.AgentID+c.WorkspaceID, ".*> \t\r\n/\\") {
		return fmt.Errorf("server returned an agentId or workspaceId that is not a subject token")
	}
	return nil
}

// OSName is the enrollment API's os string for a GOOS.
func OSName(goos string) string {
	switch goos {
	case "linux":
		return "linux"
	case "darwin":
		return "macos"
	case "windows":
		return "windows"
	}
	return "unknown"
}

// ArchName is the enrollment API's arch string for a GOARCH.
func ArchName(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return "unknown"
}

// HostOS and HostArch are this build's strings.
func HostOS() string   { return OSName(runtime.GOOS) }
func HostArch() string { return ArchName(runtime.GOARCH) }

// TokenWorkspaceID reads the workspaceId claim of an oget_ enroll token
// WITHOUT verifying it (only the server can). It lets `enroll --token` find
// an existing connection before spending the token.
func TokenWorkspaceID(token string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(token), "oget_")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest[:i])
	if err != nil {
		return "", false
	}
	var claims struct {
		WorkspaceID string `json:"workspaceId"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.WorkspaceID == "" {
		return "", false
	}
	return claims.WorkspaceID, true
}

// JoinURL joins base and path with exactly one slash.
func JoinURL(base, path string) string {
	return strings.TrimRight(base, "/") + "/" + strings.TrimLeft(path, "/")
}
