package control

import (
	"context"
	"encoding/json"
	"slices"
	"time"
)

// Capability negotiation and liveness of a connected machine (control.md §3,
// the reference's selfhosted/capabilities.ts over select.ts).

// ReconnectWindow is SELFHOSTED_RECONNECT_WINDOW_MS: a machine whose probe
// missed but that was seen at most this long ago (inclusive) is reconnecting,
// not offline.
const ReconnectWindow = 30000 * time.Millisecond

// ViewerHeartbeatIntervalMs is the viewer heartbeat cadence every capability
// document advertises.
const ViewerHeartbeatIntervalMs = 30000

// Enrollment statuses and exposures (the enrollment row's vocabulary).
const (
	EnrollmentActive     = "active"
	EnrollmentRevoked    = "revoked"
	ExposureWholeMachine = "whole-machine"
)

// The base-negotiation reasons that can appear on a cell besides the
// machine-liveness reasons of errors.go.
const (
	ReasonOSUnsupported    UnavailableReason = "os_unsupported"
	ReasonDisabledByPolicy UnavailableReason = "disabled_by_policy"
	ReasonLeaseCold        UnavailableReason = "lease_cold"
)

// MarshalJSON encodes the empty reason as null (the reference's
// `reason: null`).
func (r UnavailableReason) MarshalJSON() ([]byte, error) { return nullable(string(r)) }

// UnmarshalJSON accepts null (as the empty reason) or a string.
func (r *UnavailableReason) UnmarshalJSON(b []byte) error {
	s, err := unnullable(b)
	*r = UnavailableReason(s)
	return err
}

// Enrollment is the slice of an enrollment row that liveness and negotiation
// read (the reference's SelfhostedEnrollment). A nil *Enrollment means "never
// enrolled".
type Enrollment struct {
	Status             string // "active" gates reachability; anything else is offline
	Exposure           string // "whole-machine"
	AllowScreenControl bool
	HasDisplay         bool
	LastSeenAt         *time.Time // nil: never seen
	// WentOfflineAt is set when the machine announced GoingOffline and no newer
	// Hello or heartbeat has cleared it (the next revision's went_offline_at,
	// control.md §9): the machine reads offline at once, before the probe.
	WentOfflineAt *time.Time
}

// LivenessState is the dominant machine state of §3.2.
type LivenessState string

// Liveness states.
const (
	StateOnline       LivenessState = "online"
	StateReconnecting LivenessState = "reconnecting"
	StateOffline      LivenessState = "offline"
)

// Liveness is the result of [SelfhostedLiveness].
type Liveness struct {
	State LivenessState `json:"state"`
	// Consented is whole-machine exposure with screen-control consent.
	Consented bool `json:"consented"`
	// HasDisplay is the enrollment's display flag.
	HasDisplay bool `json:"hasDisplay"`
}

// MachineState is the dashboard's machine state.
type MachineState string

// Machine states. v1 never produces consent_required or enrolling; they
// exist for dashboards that fold more in.
const (
	MachineOnline             MachineState = "online"
	MachineReconnecting       MachineState = "reconnecting"
	MachineOffline            MachineState = "offline"
	MachineConsentRequired    MachineState = "consent_required"
	MachineDisplayUnavailable MachineState = "display_unavailable"
	MachineEnrolling          MachineState = "enrolling"
)

// MachineState folds liveness into the dashboard state (v1): not online → the
// liveness state; online without a display → display_unavailable; otherwise
// online. Consent is not folded in.
func (l Liveness) MachineState() MachineState {
	switch {
	case l.State != StateOnline:
		return MachineState(l.State)
	case !l.HasDisplay:
		return MachineDisplayUnavailable
	default:
		return MachineOnline
	}
}

// SelfhostedLiveness derives a machine's liveness (§3.2):
//
//  1. no enrollment, or status ≠ "active" → offline, not consented, no display;
//  2. consented = whole-machine && allowScreenControl; hasDisplay as enrolled;
//  3. an announced GoingOffline not yet cleared → offline (control.md §9);
//  4. the probe responded → online;
//  5. last seen within [ReconnectWindow] of now (inclusive) → reconnecting;
//  6. otherwise (never seen, or stale) → offline.
func SelfhostedLiveness(e *Enrollment, probeResponded bool, now time.Time) Liveness {
	if e == nil || e.Status != EnrollmentActive {
		return Liveness{State: StateOffline}
	}
	l := Liveness{
		State:      StateOffline,
		Consented:  e.Exposure == ExposureWholeMachine && e.AllowScreenControl,
		HasDisplay: e.HasDisplay,
	}
	switch {
	case e.WentOfflineAt != nil:
	case probeResponded:
		l.State = StateOnline
	case e.LastSeenAt != nil && now.Sub(*e.LastSeenAt) <= ReconnectWindow:
		l.State = StateReconnecting
	}
	return l
}

// Pinger is the probe seam; [*Session] implements it.
type Pinger interface {
	Ping(ctx context.Context) bool
}

// StreamMint is a minted stream endpoint threaded into negotiation (the
// reference's ctx.desktopStream / ctx.terminalStream). Resolution is used by
// the desktop only; zero means the default 1024×768.
type StreamMint struct {
	URL        string
	Token      string
	ExpiresAt  time.Time
	Resolution [2]int
}

// NegotiationContext is the input of [NegotiateCapabilities] (the
// reference's SelfhostedNegotiationInput). The zero value of every toggle is
// the reference's default: the *Disabled fields invert the reference's
// *Enabled flags (each default true).
type NegotiationContext struct {
	SessionID  string
	OS         string // "linux" (default), "macos" or "windows"
	LeaseEpoch uint64

	// Enrollment is the machine's row; nil means never enrolled (offline).
	Enrollment *Enrollment
	// ProbeResponded, when set, is the probe outcome; otherwise Session.Ping
	// is called when Session is set; otherwise the probe missed.
	ProbeResponded *bool
	Session        Pinger

	DesktopDisabled     bool // desktopEnabled = false
	TerminalDisabled    bool // terminalEnabled = false
	ComputerUseDisabled bool // computerUseEnabled = false
	ComputerUseReadOnly bool
	// NoStreamTokenSecret is streamTokenSecretAvailable === false: the desktop
	// degrades to disabled_by_policy.
	NoStreamTokenSecret bool
	DesktopAcknowledged bool
	Shared              bool
	SharedSessionIDs    []string

	// DesktopStream / TerminalStream are minted endpoints; nil when none.
	DesktopStream  *StreamMint
	TerminalStream *StreamMint

	// Now is the clock; zero means time.Now().
	Now time.Time
}

// Transport and client labels of the cells. The empty value encodes as null.
type (
	Transport     string
	DesktopClient string
)

// Transports and clients used by a selfhosted document.
const (
	TransportPtyWS       Transport     = "pty-ws"
	TransportSSEEvents   Transport     = "sse-events"
	TransportRelayFrames Transport     = "relay-frames"
	ClientFrames         DesktopClient = "frames"
)

// MarshalJSON encodes "" as null.
func (t Transport) MarshalJSON() ([]byte, error) { return nullable(string(t)) }

// UnmarshalJSON accepts null or a string.
func (t *Transport) UnmarshalJSON(b []byte) error {
	s, err := unnullable(b)
	*t = Transport(s)
	return err
}

// MarshalJSON encodes "" as null.
func (c DesktopClient) MarshalJSON() ([]byte, error) { return nullable(string(c)) }

// UnmarshalJSON accepts null or a string.
func (c *DesktopClient) UnmarshalJSON(b []byte) error {
	s, err := unnullable(b)
	*c = DesktopClient(s)
	return err
}

// NullString is a string whose empty value encodes as JSON null (minted
// urls, tokens and expiries).
type NullString string

// MarshalJSON encodes "" as null.
func (s NullString) MarshalJSON() ([]byte, error) { return nullable(string(s)) }

// UnmarshalJSON accepts null or a string.
func (s *NullString) UnmarshalJSON(b []byte) error {
	v, err := unnullable(b)
	*s = NullString(v)
	return err
}

// FileSystemCell is the FileSystem capability.
type FileSystemCell struct {
	Available bool              `json:"available"`
	ReadOnly  bool              `json:"readOnly"`
	Root      string            `json:"root"`
	PathSep   string            `json:"pathSep"`
	TreeMode  string            `json:"treeMode"`
	Reason    UnavailableReason `json:"reason"`
}

// TerminalCell is the Terminal capability.
type TerminalCell struct {
	Transport  Transport         `json:"transport"`
	PtyCapable bool              `json:"ptyCapable"`
	Shell      string            `json:"shell"`
	URL        NullString        `json:"url"`
	Token      NullString        `json:"token"`
	ExpiresAt  NullString        `json:"expiresAt"`
	Reason     UnavailableReason `json:"reason"`
}

// GitCell is the Git capability.
type GitCell struct {
	Available bool              `json:"available"`
	Repos     []string          `json:"repos"`
	Reason    UnavailableReason `json:"reason"`
}

// DesktopStreamCell is the DesktopStream capability.
type DesktopStreamCell struct {
	Transport              Transport         `json:"transport"`
	Client                 DesktopClient     `json:"client"`
	Mode                   string            `json:"mode"`
	URL                    NullString        `json:"url"`
	Token                  NullString        `json:"token"`
	ExpiresAt              NullString        `json:"expiresAt"`
	Resolution             [2]int            `json:"resolution"`
	Unredacted             bool              `json:"unredacted"`
	RequiresAcknowledgment bool              `json:"requiresAcknowledgment"`
	Acknowledged           bool              `json:"acknowledged"`
	Shared                 bool              `json:"shared"`
	SharedSessionIDs       []string          `json:"sharedSessionIds"`
	Reason                 UnavailableReason `json:"reason"`
}

// RecordingCell is the Recording capability.
type RecordingCell struct {
	Available bool              `json:"available"`
	Modes     []string          `json:"modes"`
	Codecs    []string          `json:"codecs"`
	Reason    UnavailableReason `json:"reason"`
}

// ComputerUseCell is the ComputerUse capability.
type ComputerUseCell struct {
	Available bool              `json:"available"`
	ReadOnly  bool              `json:"readOnly"`
	Reason    UnavailableReason `json:"reason"`
}

// CapabilityDocument is the negotiated SessionCapabilities document. Every
// cell is always present; an unavailable cell carries a reason.
type CapabilityDocument struct {
	SessionID                 string            `json:"sessionId"`
	Backend                   string            `json:"backend"`
	OS                        string            `json:"os"`
	Liveness                  string            `json:"liveness"` // "warm" when online, else "cold"
	LeaseEpoch                uint64            `json:"leaseEpoch"`
	ViewerHeartbeatIntervalMs int               `json:"viewerHeartbeatIntervalMs"`
	FileSystem                FileSystemCell    `json:"FileSystem"`
	Terminal                  TerminalCell      `json:"Terminal"`
	Git                       GitCell           `json:"Git"`
	DesktopStream             DesktopStreamCell `json:"DesktopStream"`
	Recording                 RecordingCell     `json:"Recording"`
	ComputerUse               ComputerUseCell   `json:"ComputerUse"`
	NegotiatedAt              string            `json:"negotiatedAt"` // ISO 8601, millisecond, UTC
}

// Negotiation constants of a selfhosted document.
const (
	DesktopModeReadOnly = "read-only"
	defaultShell        = "/bin/bash"
)

var (
	supportedOS     = []string{"linux", "macos", "windows"}
	recordingModes  = []string{"manual", "on-turn", "on-verify"}
	recordingCodecs = []string{"h264-mp4", "vp9-webm"}
	// DefaultResolution is the desktop resolution advertised when nothing
	// was minted.
	DefaultResolution = [2]int{1024, 768}
)

// ISOTime formats t as JavaScript's Date.toISOString does:
// "2026-06-22T12:00:00.000Z".
func ISOTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// NegotiateCapabilities probes the machine (ProbeResponded, else
// Session.Ping, else a miss), derives its liveness and returns the
// capability document (§3.3).
func NegotiateCapabilities(ctx context.Context, in NegotiationContext) CapabilityDocument {
	var probe bool
	switch {
	case in.ProbeResponded != nil:
		probe = *in.ProbeResponded
	case in.Session != nil:
		probe = in.Session.Ping(ctx)
	}
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	in.Now = now
	return Negotiate(in, SelfhostedLiveness(in.Enrollment, probe, now))
}

// Negotiate is the pure part of [NegotiateCapabilities]: the base
// negotiation for the selfhosted backend under live, then the selfhosted
// overlay (the first matching case wins):
//
//  1. not online → agent_offline / agent_reconnecting on every cell;
//  2. online without a display → display_unavailable on the desktop cells the
//     base left available;
//  3. online, display, no consent → the stream stays read-only, ComputerUse
//     consent_required;
//  4. otherwise the base document.
//
// A base policy reason always wins.
func Negotiate(in NegotiationContext, live Liveness) CapabilityDocument {
	doc := baseDocument(in, live.State == StateOnline)
	switch {
	case live.State != StateOnline:
		reason := ReasonAgentOffline
		if live.State == StateReconnecting {
			reason = ReasonAgentReconnecting
		}
		doc.FileSystem.Available, doc.FileSystem.ReadOnly, doc.FileSystem.Reason = false, true, reason
		t := &doc.Terminal
		t.Transport, t.URL, t.Token, t.ExpiresAt, t.Reason = "", "", "", "", reason
		doc.Git.Available, doc.Git.Reason = false, reason
		nullDesktop(&doc.DesktopStream, reason)
		doc.Recording = RecordingCell{Modes: []string{}, Codecs: []string{}, Reason: reason}
		doc.ComputerUse.Available, doc.ComputerUse.Reason = false, reason
	case !live.HasDisplay:
		if doc.DesktopStream.Transport != "" {
			nullDesktop(&doc.DesktopStream, ReasonDisplayUnavailable)
		}
		if doc.Recording.Available {
			doc.Recording = RecordingCell{Modes: []string{}, Codecs: []string{}, Reason: ReasonDisplayUnavailable}
		}
		if doc.ComputerUse.Available {
			doc.ComputerUse.Available, doc.ComputerUse.Reason = false, ReasonDisplayUnavailable
		}
	case !live.Consented:
		if doc.DesktopStream.Transport != "" {
			doc.DesktopStream.Mode = DesktopModeReadOnly
		}
		if doc.ComputerUse.Available {
			doc.ComputerUse.Available, doc.ComputerUse.Reason = false, ReasonConsentRequired
		}
	}
	return doc
}

func nullDesktop(d *DesktopStreamCell, reason UnavailableReason) {
	d.Transport, d.Client, d.Mode = "", "", DesktopModeReadOnly
	d.URL, d.Token, d.ExpiresAt = "", "", ""
	d.RequiresAcknowledgment, d.Acknowledged = false, false
	d.Shared, d.SharedSessionIDs = false, []string{}
	d.Reason = reason
}

// baseDocument is the reference's negotiateCapabilities for backend
// "selfhosted" (every static cell available; OS linux, macos, windows), with
// liveness "warm" when online and "cold" otherwise.
func baseDocument(in NegotiationContext, warm bool) CapabilityDocument {
	os := in.OS
	if os == "" {
		os = "linux"
	}
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	var osReason UnavailableReason
	if !slices.Contains(supportedOS, os) {
		osReason = ReasonOSUnsupported
	}
	liveness := "cold"
	if warm {
		liveness = "warm"
	}
	doc := CapabilityDocument{
		SessionID:                 in.SessionID,
		Backend:                   BackendID,
		OS:                        os,
		Liveness:                  liveness,
		LeaseEpoch:                in.LeaseEpoch,
		ViewerHeartbeatIntervalMs: ViewerHeartbeatIntervalMs,
		NegotiatedAt:              ISOTime(now),
	}

	// FileSystem.
	doc.FileSystem = FileSystemCell{Available: true, Root: "/", PathSep: "/", TreeMode: "lazy"}
	if osReason != "" {
		doc.FileSystem.Available, doc.FileSystem.ReadOnly, doc.FileSystem.Reason = false, true, osReason
	}

	// Terminal.
	t := TerminalCell{Transport: TransportPtyWS, PtyCapable: true, Shell: defaultShell}
	switch {
	case osReason != "":
		t.Transport, t.PtyCapable, t.Reason = "", false, osReason
	case in.TerminalDisabled:
		t.Transport, t.Reason = TransportSSEEvents, ReasonDisabledByPolicy
	case !warm && in.TerminalStream == nil:
		t.Transport, t.Reason = TransportSSEEvents, ReasonLeaseCold
	}
	if t.Transport == TransportPtyWS && in.TerminalStream != nil {
		t.URL, t.Token = NullString(in.TerminalStream.URL), NullString(in.TerminalStream.Token)
		t.ExpiresAt = NullString(ISOTime(in.TerminalStream.ExpiresAt))
	}
	doc.Terminal = t

	// Git.
	doc.Git = GitCell{Available: true, Repos: []string{}}
	if osReason != "" {
		doc.Git.Available, doc.Git.Reason = false, osReason
	}

	// DesktopStream: os_unsupported > (backend feasibility: always feasible
	// here) > disabled_by_policy (desktop off, or no stream-token secret) >
	// lease_cold (cold with nothing minted).
	d := DesktopStreamCell{Mode: DesktopModeReadOnly, Resolution: DefaultResolution, Unredacted: true}
	available := true
	switch {
	case osReason != "":
		available, d.Reason = false, osReason
	case in.DesktopDisabled, in.NoStreamTokenSecret:
		available, d.Reason = false, ReasonDisabledByPolicy
	case !warm && in.DesktopStream == nil:
		available, d.Reason = false, ReasonLeaseCold
	}
	if available {
		d.Transport, d.Client = TransportRelayFrames, ClientFrames
		d.RequiresAcknowledgment = true
		d.Acknowledged = in.DesktopAcknowledged
		d.Shared = in.Shared
	}
	d.SharedSessionIDs = []string{}
	if d.Shared && in.SharedSessionIDs != nil {
		d.SharedSessionIDs = slices.Clone(in.SharedSessionIDs)
	}
	if available && d.Acknowledged && in.DesktopStream != nil {
		m := in.DesktopStream
		d.URL, d.Token, d.ExpiresAt = NullString(m.URL), NullString(m.Token), NullString(ISOTime(m.ExpiresAt))
		if m.Resolution != ([2]int{}) {
			d.Resolution = m.Resolution
		}
	}
	doc.DesktopStream = d

	// Recording.
	switch {
	case osReason != "":
		doc.Recording = RecordingCell{Modes: []string{}, Codecs: []string{}, Reason: osReason}
	case in.DesktopDisabled:
		doc.Recording = RecordingCell{Modes: []string{}, Codecs: []string{}, Reason: ReasonDisabledByPolicy}
	default:
		doc.Recording = RecordingCell{Available: true, Modes: slices.Clone(recordingModes), Codecs: slices.Clone(recordingCodecs)}
	}

	// ComputerUse.
	doc.ComputerUse = ComputerUseCell{Available: true, ReadOnly: in.ComputerUseReadOnly}
	switch {
	case osReason != "":
		doc.ComputerUse.Available, doc.ComputerUse.Reason = false, osReason
	case in.DesktopDisabled, in.ComputerUseDisabled:
		doc.ComputerUse.Available, doc.ComputerUse.Reason = false, ReasonDisabledByPolicy
	}
	return doc
}

func nullable(s string) ([]byte, error) {
	if s == "" {
		return []byte("null"), nil
	}
	return json.Marshal(s)
}

func unnullable(b []byte) (string, error) {
	if string(b) == "null" {
		return "", nil
	}
	var s string
	err := json.Unmarshal(b, &s)
	return s, err
}
