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
)

// API paths, joined to the API base URL.
const (
	PathDeviceStart   = "/v1/enrollments/device/start"
	PathDevicePoll    = "/v1/enrollments/device/poll"
	PathTokenExchange = "/v1/enrollments/token/exchange"
)

// DefaultIntervalSeconds is the poll interval when the server names none.
const DefaultIntervalSeconds = 5

// StartRequest is the device-flow start body. exposure, installFingerprint,
// updateChannel and offersDisplay are deliberately not sent.
type StartRequest struct {
	WorkspaceID           string `json:"workspaceId"`
	PublicKey             string `json:"publicKey"`
	OS                    string `json:"os"`
	Arch                  string `json:"arch"`
	MachineName           string `json:"machineName,omitempty"`
	CanOfferDisplay       bool   `json:"canOfferDisplay"`
	RequestsScreenControl bool   `json:"requestsScreenControl"`
}

// StartResponse is the device-flow start answer.
type StartResponse struct {
	UserCode                string `json:"userCode"`
	DeviceCode              string `json:"deviceCode"`
	VerificationURI         string `json:"verificationUri"`
	VerificationURIComplete string `json:"verificationUriComplete"`
	ExpiresInSeconds        uint32 `json:"expiresInSeconds"`
	IntervalSeconds         uint32 `json:"intervalSeconds"`
}

// UnmarshalJSON applies the defaults (intervalSeconds 5) and requires
// userCode, deviceCode and verificationUri.
func (r *StartResponse) UnmarshalJSON(b []byte) error {
	type plain StartResponse
	aux := struct {
		plain
		IntervalSeconds *uint32 `json:"intervalSeconds"`
	}{}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*r = StartResponse(aux.plain)
	r.IntervalSeconds = DefaultIntervalSeconds
	if aux.IntervalSeconds != nil {
		r.IntervalSeconds = *aux.IntervalSeconds
	}
	switch {
	case r.UserCode == "":
		return fmt.Errorf("missing field `userCode`")
	case r.DeviceCode == "":
		return fmt.Errorf("missing field `deviceCode`")
	case r.VerificationURI == "":
		return fmt.Errorf("missing field `verificationUri`")
	}
	return nil
}

// PollRequest is the device-flow poll body.
type PollRequest struct {
	DeviceCode string `json:"deviceCode"`
}

// State is a poll state: a lowercase string on the wire.
type State string

// Poll states. The control plane signals "poll slower" with HTTP 429; the
// RFC 8628 slow_down state is understood too.
const (
	StatePending    State = "pending"
	StateAuthorized State = "authorized"
	StateDenied     State = "denied"
	StateExpired    State = "expired"
	StateDisabled   State = "disabled"
	StateSlowDown   State = "slow_down"
)

// UnmarshalJSON rejects unknown states.
func (s *State) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch st := State(v); st {
	case StatePending, StateAuthorized, StateDenied, StateExpired, StateDisabled, StateSlowDown:
		*s = st
		return nil
	}
	return fmt.Errorf("unknown device-flow state %q", v)
}

// PollResponse is the device-flow poll answer.
type PollResponse struct {
	State       State        `json:"state"`
	Credentials *Credentials `json:"credentials,omitempty"`
}

// ExchangeRequest is the zero-click token exchange body (no workspaceId: the
// token carries it; no exposure).
type ExchangeRequest struct {
	Token                 string `json:"token"`
	PublicKey             string `json:"publicKey"`
	OS                    string `json:"os"`
	Arch                  string `json:"arch"`
	MachineName           string `json:"machineName,omitempty"`
	CanOfferDisplay       bool   `json:"canOfferDisplay"`
	RequestsScreenControl bool   `json:"requestsScreenControl"`
}

// ExchangeResponse is the token exchange answer.
type ExchangeResponse struct {
	Credentials *Credentials `json:"credentials"`
}

// Credentials is what an authorized poll or an exchange returns (camelCase).
// subjectPrefix and natsAccountCreds are ignored.
type Credentials struct {
	AgentID                string   `json:"agentId"`
	WorkspaceID            string   `json:"workspaceId"`
	Bearer                 string   `json:"bearer"`
	NATSURLs               []string `json:"natsUrls"`
	RelayURL               string   `json:"relayUrl"`
	RelayToken             string   `json:"relayToken"`
	UpdatePublicKey        string   `json:"updatePublicKey"`
	ConsentedWholeMachine  bool     `json:"consentedWholeMachine"`
	ConsentedScreenControl bool     `json:"consentedScreenControl"`
}

// Config converts to the stored form for the connection to apiURL:
// update_channel = channel, empty resume token, epoch 0.
func (c *Credentials) Config(apiURL, channel string) *config.Credentials {
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

func (c *Credentials) validate() error {
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
