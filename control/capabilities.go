package control

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
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

	// Report is what the machine last reported (next revision); when set
	// the document gains its Machine cell, and "desktop unavailable: …"
	// carries the machine's own reason. Nil: a v1 document.
	Report *MachineReport

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
	// Machine is the next revision's report (nil without one).
	Machine      *MachineCell `json:"Machine,omitempty"`
	NegotiatedAt string       `json:"negotiatedAt"` // ISO 8601, millisecond, UTC
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
// A base policy reason always wins. With a Report, a machine that says
// why it has no desktop reads as having no display, and the document's
// Machine cell explains what it cannot do now.
func Negotiate(in NegotiationContext, live Liveness) CapabilityDocument {
	if in.Report != nil && in.Report.NoDesktop {
		live.HasDisplay = false // the machine's own word beats the enrollment's flag
	}
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
	if in.Report != nil {
		doc.Machine = machineCell(in.Report, live, &doc)
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

// ---------------------------------------------------------------------------
// The next revision's machine report (control.md §9): what the latest Hello
// and heartbeat said beyond v1 (desktop_unavailable_reason, op_stream, the
// resource-policy bits, HostCapacitySample, AdmissionTelemetry), and what it
// means for a capability document and for one operation.

// HostCapacity is a heartbeat's HostCapacitySample.
type HostCapacity struct {
	MemAvailableBytes uint64 `json:"memAvailableBytes"`
	DiskFreeBytes     uint64 `json:"diskFreeBytes"`
	FdHeadroom        uint64 `json:"fdHeadroom"`
	PidHeadroom       uint64 `json:"pidHeadroom"`
	Nproc             uint64 `json:"nproc"`
}

// AdmissionTelemetry is a heartbeat's AdmissionTelemetry.
type AdmissionTelemetry struct {
	LightRunning         uint64 `json:"lightRunning"`
	LightQueued          uint64 `json:"lightQueued"`
	HeavyRunning         uint64 `json:"heavyRunning"`
	HeavyQueued          uint64 `json:"heavyQueued"`
	LiveOps              uint64 `json:"liveOps"`
	OpFramesDroppedTotal uint64 `json:"opFramesDroppedTotal"`
	EvictedUnackedTotal  uint64 `json:"evictedUnackedTotal"`
}

// MachineReport is what a machine last reported about itself (store.Machine
// builds it). The zero value is a v1 agent: nothing beyond v1 reported.
type MachineReport struct {
	// NoDesktop: the latest Hello said desktop=false.
	NoDesktop bool
	// DesktopUnavailableReason is Hello's actionable reason why the desktop
	// is off (macOS without Screen Recording, no display, paused by the
	// owner), or, with the desktop on, what part of it is missing (input).
	DesktopUnavailableReason string
	// OpStream is Hello's op_stream: streaming exec and transfers.
	OpStream bool
	// ResourcePolicy and CPUQuota are Hello's operation_resource_policy and
	// operation_cpu_quota: per-op memory and CPU limits are enforceable.
	ResourcePolicy bool
	CPUQuota       bool
	// Draining is the latest heartbeat's draining flag.
	Draining bool
	// MemTotalBytes is the latest metrics' total memory (0: unknown).
	MemTotalBytes uint64
	// Capacity and Admission are the latest heartbeat's telemetry (nil from
	// v1 agents).
	Capacity  *HostCapacity
	Admission *AdmissionTelemetry
}

// Pressure thresholds: below them the machine reads as under pressure.
const (
	// MemoryPressureMinBytes: less available memory than this, or than
	// MemoryPressureFraction of the total, is memory pressure.
	MemoryPressureMinBytes = 256 << 20
	MemoryPressureFraction = 0.05
	// DiskLowBytes: less free disk under the workspace root than this.
	DiskLowBytes = 1 << 30
	// HeadroomLow: fewer spare file descriptors or process ids than this.
	HeadroomLow = 64
)

// Pressure kinds.
const (
	PressureMemory = "memory"
	PressureDisk   = "disk"
	PressureFDs    = "fds"
	PressurePIDs   = "pids"
)

// PressureNote is one way the machine is short of room, with its message.
type PressureNote struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Pressures lists where the machine is short of room, from its latest
// HostCapacitySample (none without one).
func (r MachineReport) Pressures() []PressureNote {
	c := r.Capacity
	if c == nil {
		return nil
	}
	var out []PressureNote
	memFloor := uint64(MemoryPressureMinBytes)
	if f := uint64(float64(r.MemTotalBytes) * MemoryPressureFraction); f > memFloor {
		memFloor = f
	}
	if c.MemAvailableBytes < memFloor {
		msg := "machine under memory pressure: " + mib(c.MemAvailableBytes) + " available"
		if r.MemTotalBytes > 0 {
			msg += " of " + mib(r.MemTotalBytes)
		}
		out = append(out, PressureNote{PressureMemory, msg})
	}
	if c.DiskFreeBytes < DiskLowBytes {
		out = append(out, PressureNote{PressureDisk, "machine low on disk: " + mib(c.DiskFreeBytes) + " free under its workspace root"})
	}
	if c.FdHeadroom < HeadroomLow {
		out = append(out, PressureNote{PressureFDs, fmt.Sprintf("machine near its open-file limit: %d file descriptors to spare", c.FdHeadroom)})
	}
	if c.PidHeadroom < HeadroomLow {
		out = append(out, PressureNote{PressurePIDs, fmt.Sprintf("machine near its process limit: %d process ids to spare", c.PidHeadroom)})
	}
	return out
}

func mib(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }

// MachineCell is the capability document's account of the machine's own
// report (present only when a report was given, so v1 documents are
// unchanged).
type MachineCell struct {
	OpStream       bool           `json:"opStream"`
	ResourcePolicy bool           `json:"resourcePolicy"`
	CPUQuota       bool           `json:"cpuQuota"`
	Draining       bool           `json:"draining"`
	Pressure       []PressureNote `json:"pressure"`
	// Notes explain, one line each, what the machine cannot do now and why.
	Notes []string `json:"notes"`
}

// Operation reasons beyond the cells' (why one operation cannot run).
const (
	ReasonResourcePolicyUnsupported UnavailableReason = "resource_policy_unsupported"
	ReasonOpStreamUnsupported       UnavailableReason = "op_stream_unsupported"
	ReasonAgentDraining             UnavailableReason = "agent_draining"
	ReasonMachinePressure           UnavailableReason = "machine_pressure"
)

// desktopNote is the line that says why there is no desktop (or what part
// of it is missing), in the machine's own words when it gave them.
func desktopNote(r *MachineReport) string {
	switch reason := r.DesktopUnavailableReason; {
	case reason == "":
		return "desktop unavailable: the machine reports no display"
	case strings.HasPrefix(reason, "desktop "):
		return reason
	default:
		return "desktop unavailable: " + reason
	}
}

// machineCell builds the document's machine cell from the report.
func machineCell(r *MachineReport, live Liveness, doc *CapabilityDocument) *MachineCell {
	c := &MachineCell{OpStream: r.OpStream, ResourcePolicy: r.ResourcePolicy, CPUQuota: r.CPUQuota, Draining: r.Draining,
		Pressure: r.Pressures(), Notes: []string{}}
	if c.Pressure == nil {
		c.Pressure = []PressureNote{}
	}
	if live.State != StateOnline {
		return c
	}
	if doc.DesktopStream.Reason == ReasonDisplayUnavailable || r.DesktopUnavailableReason != "" {
		c.Notes = append(c.Notes, desktopNote(r))
	}
	if r.Draining {
		c.Notes = append(c.Notes, "machine draining: new operations are refused until it is back (an update or a stop is under way)")
	}
	for _, p := range c.Pressure {
		c.Notes = append(c.Notes, p.Message)
	}
	if !r.ResourcePolicy {
		c.Notes = append(c.Notes, "resource policy unsupported: the machine cannot enforce per-op memory limits (no delegated cgroup v2 subtree)")
	} else if !r.CPUQuota {
		c.Notes = append(c.Notes, "CPU quota unsupported: the machine can limit memory per op but not CPU")
	}
	if !r.OpStream {
		c.Notes = append(c.Notes, "op-stream unsupported: exec and transfers use the buffered request/reply path")
	}
	return c
}

// OperationRequest is one operation a platform is about to send.
type OperationRequest struct {
	// Op is the ControlRequest op name: "exec", "git", "fs_write",
	// "screenshot", "op_start", ...
	Op string
	// ResourcePolicy is the policy the op will carry (exec and git).
	ResourcePolicy *agentpb.OperationResourcePolicy
	// OpStream: the op will go over op-stream.
	OpStream bool
	// WriteBytes is how much the op will write to the machine's disk.
	WriteBytes uint64
}

// OperationAdmission is the verdict on one operation.
type OperationAdmission struct {
	Allowed bool              `json:"allowed"`
	Reason  UnavailableReason `json:"reason"`
	// Message says why not, or is "" when allowed.
	Message string `json:"message"`
	// Warnings are reasons the op may fare badly though it is allowed
	// (memory pressure under an exec).
	Warnings []string `json:"warnings"`
}

// desktopOps need a display.
var desktopOps = map[string]bool{"screenshot": true, "input": true, "desktop_ensure": true, "desktop_stream_open": true,
	"computer_frames_open": true}

// heavyOps run commands on the machine, which memory and process pressure
// hurt.
var heavyOps = map[string]bool{"exec": true, "git": true, "op_start": true, "pty_open": true}

// AdmitOperation decides, from the machine's liveness and its latest
// report, whether op can run now and explains why not (the reference's
// resolveOperationAdmission, which runs before each op). A refusal here is
// what the agent would answer: a policy the machine cannot enforce is
// UNSUPPORTED there too. Pressure only warns: the agent's own admission
// has the live numbers.
func AdmitOperation(live Liveness, r MachineReport, req OperationRequest) OperationAdmission {
	refuse := func(reason UnavailableReason, msg string) OperationAdmission {
		return OperationAdmission{Reason: reason, Message: msg, Warnings: []string{}}
	}
	switch live.State {
	case StateOffline:
		return refuse(ReasonAgentOffline, "machine offline")
	case StateReconnecting:
		return refuse(ReasonAgentReconnecting, "machine reconnecting (seen within the last 30 s)")
	}
	if r.Draining {
		return refuse(ReasonAgentDraining, "machine draining: new operations are refused until it is back (an update or a stop is under way)")
	}
	if desktopOps[req.Op] && (!live.HasDisplay || r.NoDesktop || (req.Op == "input" && r.DesktopUnavailableReason != "")) {
		return refuse(ReasonDisplayUnavailable, desktopNote(&r))
	}
	if req.OpStream && !r.OpStream {
		return refuse(ReasonOpStreamUnsupported, "op-stream unsupported: the machine's agent does not serve op_start; use the buffered path")
	}
	if p := req.ResourcePolicy; p != nil {
		if (p.MemoryMaxBytes != nil || p.MemoryHighBytes != nil) && !r.ResourcePolicy {
			return refuse(ReasonResourcePolicyUnsupported, "resource policy unsupported: the machine cannot enforce per-op memory limits (no delegated cgroup v2 subtree); send the op without one or pick another machine")
		}
		if p.CpuMaxMillicores != nil && !r.CPUQuota {
			return refuse(ReasonResourcePolicyUnsupported, "resource policy unsupported: the machine cannot enforce per-op CPU quotas; send the op without cpu_max_millicores or pick another machine")
		}
	}
	a := OperationAdmission{Allowed: true, Warnings: []string{}}
	for _, p := range r.Pressures() {
		switch {
		case p.Kind == PressureDisk && req.WriteBytes > 0 && r.Capacity.DiskFreeBytes < req.WriteBytes:
			return refuse(ReasonMachinePressure, fmt.Sprintf("not enough disk: writing %s, %s free under the workspace root", mib(req.WriteBytes), mib(r.Capacity.DiskFreeBytes)))
		case p.Kind == PressureDisk && req.WriteBytes > 0, p.Kind != PressureDisk && heavyOps[req.Op]:
			a.Warnings = append(a.Warnings, p.Message)
		}
	}
	return a
}
