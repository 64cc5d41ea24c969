// Package enrollwire is the JSON of the enrollment API (control.md §6.2,
// §6.3; agent.md §2.3, §2.4): the bodies the agent's client (agent/enroll)
// sends and reads and the control plane's API (control/enroll) reads and
// answers, defined once so the two ends cannot drift apart. Requests the
// server validates field by field are decoded there with presence-aware
// (pointer) fields; what goes on the wire is defined here.
package enrollwire

import (
	"encoding/json"
	"fmt"
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

// Poll states. The control plane signals "poll slower" with HTTP 429 and
// never sends slow_down (control.md §6.3); the agent understands the RFC
// 8628 state anyway.
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

// Credentials are what an authorized poll and an exchange return
// (EnrollmentCredentials, control.md §6.3). The agent stores all but
// subjectPrefix and natsAccountCreds (agent.md §2.3).
type Credentials struct {
	AgentID                string   `json:"agentId"`
	WorkspaceID            string   `json:"workspaceId"`
	Bearer                 string   `json:"bearer"`
	SubjectPrefix          string   `json:"subjectPrefix"`
	NATSURLs               []string `json:"natsUrls"`
	RelayURL               string   `json:"relayUrl"`
	RelayToken             string   `json:"relayToken"`
	NATSAccountCreds       string   `json:"natsAccountCreds"` // == Bearer (vestigial)
	UpdatePublicKey        string   `json:"updatePublicKey"`
	ConsentedWholeMachine  bool     `json:"consentedWholeMachine"`
	ConsentedScreenControl bool     `json:"consentedScreenControl"`
}
