package control

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The fixtures of control.md §8 selfhosted-capabilities.test.ts.
var capNow = time.Date(2026, 6, 22, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { t := capNow.Add(d); return &t }

func defaultEnrollment(mod ...func(*Enrollment)) *Enrollment {
	e := &Enrollment{Status: EnrollmentActive, Exposure: ExposureWholeMachine, AllowScreenControl: true, HasDisplay: true, LastSeenAt: at(0)}
	for _, m := range mod {
		m(e)
	}
	return e
}

func boolp(b bool) *bool { return &b }

// pingSession is a Session whose transport answers pings (online) or
// synthesizes AGENT_OFFLINE, and counts the requests.
func pingSession(t *testing.T, online bool, calls *int) *Session {
	t.Helper()
	s, err := NewSession(SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: RPCFunc(
		func(_ context.Context, subject string, req *agentpb.ControlRequest, _ time.Duration) (*agentpb.ControlResponse, error) {
			*calls++
			if subject != SubjectFor(testWS, testAgent) || req.GetPing() == nil || req.GetEpoch() != 0 {
				t.Errorf("probe: subject %q op %v epoch %d", subject, opLabel(req), req.GetEpoch())
			}
			if !online {
				return OfflineResponse(req.GetRequestId()), nil
			}
			return &agentpb.ControlResponse{RequestId: req.GetRequestId(),
				Result: &agentpb.ControlResponse_Ping{Ping: &agentpb.PingResponse{Nonce: req.GetPing().GetNonce()}}}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSelfhostedLiveness(t *testing.T) {
	revoked := defaultEnrollment(func(e *Enrollment) { e.Status = EnrollmentRevoked })
	tests := []struct {
		name  string
		enr   *Enrollment
		probe bool
		want  Liveness
	}{
		{"1 null enrollment → offline", nil, true, Liveness{State: StateOffline}},
		{"2 revoked, probe answering → offline", revoked, true, Liveness{State: StateOffline}},
		{"3 probe answers → online", defaultEnrollment(), true, Liveness{StateOnline, true, true}},
		{"4 probe missed, seen 5s ago → reconnecting", defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(-5 * time.Second) }), false, Liveness{StateReconnecting, true, true}},
		{"5 probe missed, seen 120s ago → offline", defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(-120 * time.Second) }), false, Liveness{StateOffline, true, true}},
		{"6 probe missed, never seen → offline", defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = nil }), false, Liveness{StateOffline, true, true}},
		{"window edge 30000ms is inclusive", defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(-30 * time.Second) }), false, Liveness{StateReconnecting, true, true}},
		{"window edge 30001ms is offline", defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(-30001 * time.Millisecond) }), false, Liveness{StateOffline, true, true}},
		{"seen in the future → reconnecting", defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(time.Minute) }), false, Liveness{StateReconnecting, true, true}},
		{"no screen control → not consented", defaultEnrollment(func(e *Enrollment) { e.AllowScreenControl = false }), true, Liveness{StateOnline, false, true}},
		{"other exposure → not consented", defaultEnrollment(func(e *Enrollment) { e.Exposure = "workspace" }), true, Liveness{StateOnline, false, true}},
		{"no display", defaultEnrollment(func(e *Enrollment) { e.HasDisplay = false }), true, Liveness{StateOnline, true, false}},
		{"going offline beats the probe", defaultEnrollment(func(e *Enrollment) { e.WentOfflineAt = at(0) }), true, Liveness{StateOffline, true, true}},
		{"going offline beats a fresh last seen", defaultEnrollment(func(e *Enrollment) { e.WentOfflineAt = at(0) }), false, Liveness{StateOffline, true, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SelfhostedLiveness(tc.enr, tc.probe, capNow); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMachineState(t *testing.T) {
	for _, tc := range []struct {
		l    Liveness
		want MachineState
	}{
		{Liveness{StateOffline, true, true}, MachineOffline},
		{Liveness{StateReconnecting, true, false}, MachineReconnecting},
		{Liveness{StateOnline, true, false}, MachineDisplayUnavailable},
		{Liveness{StateOnline, false, true}, MachineOnline}, // consent is not folded in
		{Liveness{StateOnline, true, true}, MachineOnline},
	} {
		if got := tc.l.MachineState(); got != tc.want {
			t.Errorf("%+v → %q, want %q", tc.l, got, tc.want)
		}
	}
}

// cellReasons is every cell's reason, in document order.
func cellReasons(d CapabilityDocument) []UnavailableReason {
	return []UnavailableReason{d.FileSystem.Reason, d.Terminal.Reason, d.Git.Reason, d.DesktopStream.Reason, d.Recording.Reason, d.ComputerUse.Reason}
}

func TestNegotiateCapabilities(t *testing.T) {
	online, offline := true, false
	type check func(t *testing.T, d CapabilityDocument)
	tests := []struct {
		name  string
		in    NegotiationContext
		check check
	}{
		{"7 online, displayed, consented", NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online}, func(t *testing.T, d CapabilityDocument) {
			if d.Backend != "selfhosted" || d.Liveness != "warm" || d.OS != "linux" {
				t.Errorf("top: %s %s %s", d.Backend, d.Liveness, d.OS)
			}
			if !d.FileSystem.Available || d.FileSystem.Reason != "" || d.FileSystem.ReadOnly || d.FileSystem.Root != "/" || d.FileSystem.PathSep != "/" || d.FileSystem.TreeMode != "lazy" {
				t.Errorf("FS %+v", d.FileSystem)
			}
			if !d.Git.Available || d.Git.Reason != "" {
				t.Errorf("Git %+v", d.Git)
			}
			if d.Terminal.Transport != TransportPtyWS || !d.Terminal.PtyCapable || d.Terminal.Shell != "/bin/bash" || d.Terminal.Reason != "" || d.Terminal.URL != "" {
				t.Errorf("Terminal %+v", d.Terminal)
			}
			ds := d.DesktopStream
			if ds.Transport != TransportRelayFrames || ds.Client != ClientFrames || ds.Mode != "read-only" || ds.Reason != "" ||
				!ds.RequiresAcknowledgment || ds.Acknowledged || ds.Resolution != [2]int{1024, 768} || !ds.Unredacted {
				t.Errorf("Desktop %+v", ds)
			}
			if !d.ComputerUse.Available || d.ComputerUse.Reason != "" || d.ComputerUse.ReadOnly {
				t.Errorf("ComputerUse %+v", d.ComputerUse)
			}
			if !d.Recording.Available || d.Recording.Reason != "" || len(d.Recording.Modes) != 3 || len(d.Recording.Codecs) != 2 {
				t.Errorf("Recording %+v", d.Recording)
			}
		}},
		{"8 null enrollment, probe false → agent_offline everywhere", NegotiationContext{ProbeResponded: &offline}, func(t *testing.T, d CapabilityDocument) {
			if d.FileSystem.Available || !d.FileSystem.ReadOnly {
				t.Errorf("FS %+v", d.FileSystem)
			}
			if d.Terminal.Transport != "" || d.DesktopStream.Transport != "" || d.Git.Available || d.Recording.Available || d.ComputerUse.Available {
				t.Errorf("cells still available: %+v", d)
			}
			for i, r := range cellReasons(d) {
				if r != ReasonAgentOffline {
					t.Errorf("cell %d reason %q", i, r)
				}
			}
			if d.Liveness != "cold" {
				t.Errorf("liveness %q", d.Liveness)
			}
		}},
		{"9 enrolled, seen 120s ago, offline mock → agent_offline", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(-120 * time.Second) })}, func(t *testing.T, d CapabilityDocument) {
			if d.FileSystem.Reason != ReasonAgentOffline || d.DesktopStream.Reason != ReasonAgentOffline || d.DesktopStream.Transport != "" {
				t.Errorf("FS %+v Desktop %+v", d.FileSystem, d.DesktopStream)
			}
		}},
		{"10 seen 5s ago, offline mock → agent_reconnecting", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(-5 * time.Second) })}, func(t *testing.T, d CapabilityDocument) {
			for i, r := range cellReasons(d) {
				if r != ReasonAgentReconnecting {
					t.Errorf("cell %d reason %q", i, r)
				}
			}
			ds := d.DesktopStream
			if ds.Client != "" || ds.RequiresAcknowledgment || ds.Acknowledged || ds.Shared || len(ds.SharedSessionIDs) != 0 || ds.Mode != "read-only" {
				t.Errorf("Desktop %+v", ds)
			}
			if len(d.Recording.Modes) != 0 || len(d.Recording.Codecs) != 0 {
				t.Errorf("Recording %+v", d.Recording)
			}
		}},
		{"11 allowScreenControl false", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.AllowScreenControl = false }), ProbeResponded: &online}, func(t *testing.T, d CapabilityDocument) {
			if !d.FileSystem.Available || d.Terminal.Transport != TransportPtyWS || !d.Git.Available {
				t.Errorf("channel A degraded: %+v %+v %+v", d.FileSystem, d.Terminal, d.Git)
			}
			if d.DesktopStream.Transport != TransportRelayFrames || d.DesktopStream.Mode != "read-only" || d.DesktopStream.Reason != "" {
				t.Errorf("Desktop %+v", d.DesktopStream)
			}
			if !d.Recording.Available || d.Recording.Reason != "" {
				t.Errorf("Recording %+v", d.Recording)
			}
			if d.ComputerUse.Available || d.ComputerUse.Reason != ReasonConsentRequired {
				t.Errorf("ComputerUse %+v", d.ComputerUse)
			}
		}},
		{"12 hasDisplay false", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.HasDisplay = false }), ProbeResponded: &online}, func(t *testing.T, d CapabilityDocument) {
			if !d.FileSystem.Available || d.Terminal.Transport != TransportPtyWS || !d.Git.Available {
				t.Errorf("channel A degraded")
			}
			if d.DesktopStream.Transport != "" || d.DesktopStream.Reason != ReasonDisplayUnavailable {
				t.Errorf("Desktop %+v", d.DesktopStream)
			}
			if d.ComputerUse.Reason != ReasonDisplayUnavailable || d.Recording.Reason != ReasonDisplayUnavailable || d.Recording.Available || d.ComputerUse.Available {
				t.Errorf("CU %+v Rec %+v", d.ComputerUse, d.Recording)
			}
		}},
		{"13 no display and no consent → display_unavailable wins", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.HasDisplay, e.AllowScreenControl = false, false }), ProbeResponded: &online}, func(t *testing.T, d CapabilityDocument) {
			if d.DesktopStream.Reason != ReasonDisplayUnavailable || d.ComputerUse.Reason != ReasonDisplayUnavailable {
				t.Errorf("Desktop %q CU %q", d.DesktopStream.Reason, d.ComputerUse.Reason)
			}
		}},
		{"14 desktopEnabled false → disabled_by_policy (base wins)", NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online, DesktopDisabled: true}, func(t *testing.T, d CapabilityDocument) {
			if d.DesktopStream.Transport != "" || d.DesktopStream.Reason != ReasonDisabledByPolicy {
				t.Errorf("Desktop %+v", d.DesktopStream)
			}
			if d.Recording.Reason != ReasonDisabledByPolicy || d.ComputerUse.Reason != ReasonDisabledByPolicy {
				t.Errorf("Rec %q CU %q", d.Recording.Reason, d.ComputerUse.Reason)
			}
		}},
		{"14b desktop off and no display → base reason still wins", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.HasDisplay = false }), ProbeResponded: &online, DesktopDisabled: true}, func(t *testing.T, d CapabilityDocument) {
			for _, r := range []UnavailableReason{d.DesktopStream.Reason, d.Recording.Reason, d.ComputerUse.Reason} {
				if r != ReasonDisabledByPolicy {
					t.Errorf("reason %q", r)
				}
			}
		}},
		{"computer use off, no consent → base reason wins", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.AllowScreenControl = false }), ProbeResponded: &online, ComputerUseDisabled: true}, func(t *testing.T, d CapabilityDocument) {
			if d.ComputerUse.Reason != ReasonDisabledByPolicy || d.DesktopStream.Reason != "" {
				t.Errorf("CU %q Desktop %q", d.ComputerUse.Reason, d.DesktopStream.Reason)
			}
		}},
		{"terminal off → sse-events disabled_by_policy", NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online, TerminalDisabled: true}, func(t *testing.T, d CapabilityDocument) {
			if d.Terminal.Transport != TransportSSEEvents || d.Terminal.Reason != ReasonDisabledByPolicy {
				t.Errorf("Terminal %+v", d.Terminal)
			}
		}},
		{"no stream-token secret → desktop disabled_by_policy, recording stays", NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online, NoStreamTokenSecret: true}, func(t *testing.T, d CapabilityDocument) {
			if d.DesktopStream.Reason != ReasonDisabledByPolicy || !d.Recording.Available || !d.ComputerUse.Available {
				t.Errorf("Desktop %+v Rec %+v", d.DesktopStream, d.Recording)
			}
		}},
		{"unsupported OS → os_unsupported everywhere but the overlay", NegotiationContext{OS: "plan9", Enrollment: defaultEnrollment(), ProbeResponded: &online}, func(t *testing.T, d CapabilityDocument) {
			for i, r := range cellReasons(d) {
				if r != ReasonOSUnsupported {
					t.Errorf("cell %d reason %q", i, r)
				}
			}
			if d.Terminal.Transport != "" || d.Terminal.PtyCapable || !d.FileSystem.ReadOnly {
				t.Errorf("Terminal %+v FS %+v", d.Terminal, d.FileSystem)
			}
		}},
		{"acknowledged, shared, minted", NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online, DesktopAcknowledged: true, Shared: true, SharedSessionIDs: []string{"s2"},
			DesktopStream:  &StreamMint{URL: "wss://r/stream", Token: "ogs_x", ExpiresAt: capNow.Add(2 * time.Minute), Resolution: [2]int{1280, 800}},
			TerminalStream: &StreamMint{URL: "wss://r/pty", Token: "ogs_y", ExpiresAt: capNow.Add(2 * time.Minute)}}, func(t *testing.T, d CapabilityDocument) {
			ds := d.DesktopStream
			if !ds.Acknowledged || !ds.Shared || len(ds.SharedSessionIDs) != 1 || ds.URL != "wss://r/stream" || ds.Token != "ogs_x" ||
				ds.ExpiresAt != "2026-06-22T12:02:00.000Z" || ds.Resolution != [2]int{1280, 800} || ds.Mode != "read-only" {
				t.Errorf("Desktop %+v", ds)
			}
			if d.Terminal.URL != "wss://r/pty" || d.Terminal.Token != "ogs_y" {
				t.Errorf("Terminal %+v", d.Terminal)
			}
		}},
		{"minted but not acknowledged → no url", NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online, Shared: true,
			DesktopStream: &StreamMint{URL: "wss://r/stream", Token: "ogs_x", ExpiresAt: capNow}}, func(t *testing.T, d CapabilityDocument) {
			if d.DesktopStream.URL != "" || d.DesktopStream.Token != "" || !d.DesktopStream.Shared || d.DesktopStream.SharedSessionIDs == nil {
				t.Errorf("Desktop %+v", d.DesktopStream)
			}
		}},
		{"no display with a minted stream → nulled", NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.HasDisplay = false }), ProbeResponded: &online, DesktopAcknowledged: true,
			DesktopStream: &StreamMint{URL: "wss://r/stream", Token: "ogs_x", ExpiresAt: capNow}}, func(t *testing.T, d CapabilityDocument) {
			if d.DesktopStream.URL != "" || d.DesktopStream.Acknowledged || d.DesktopStream.RequiresAcknowledgment {
				t.Errorf("Desktop %+v", d.DesktopStream)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now = capNow
			tc.in.SessionID = "sess-1"
			d := NegotiateCapabilities(context.Background(), tc.in)
			if d.SessionID != "sess-1" || d.NegotiatedAt != "2026-06-22T12:00:00.000Z" || d.ViewerHeartbeatIntervalMs != 30000 {
				t.Errorf("top level %+v", d)
			}
			tc.check(t, d)
		})
	}
}

// Check 15: five enrollment variants, leaseEpoch 2 → every reason is null or
// a string, and leaseEpoch is 2 (checked on the JSON a TS client reads).
func TestNegotiateJSONShape(t *testing.T) {
	variants := []*Enrollment{
		nil,
		defaultEnrollment(),
		defaultEnrollment(func(e *Enrollment) { e.AllowScreenControl = false }),
		defaultEnrollment(func(e *Enrollment) { e.HasDisplay = false }),
		defaultEnrollment(func(e *Enrollment) { e.Status = EnrollmentRevoked }),
	}
	for i, enr := range variants {
		d := NegotiateCapabilities(context.Background(), NegotiationContext{SessionID: "s", LeaseEpoch: 2, Enrollment: enr, ProbeResponded: boolp(true), Now: capNow})
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["leaseEpoch"] != float64(2) {
			t.Errorf("variant %d: leaseEpoch %v", i, m["leaseEpoch"])
		}
		for _, cell := range []string{"FileSystem", "Terminal", "Git", "DesktopStream", "Recording", "ComputerUse"} {
			c, ok := m[cell].(map[string]any)
			if !ok {
				t.Fatalf("variant %d: cell %s missing in %s", i, cell, b)
			}
			r, present := c["reason"]
			if !present {
				t.Errorf("variant %d: %s has no reason key", i, cell)
			}
			if _, isStr := r.(string); r != nil && !isStr {
				t.Errorf("variant %d: %s reason %v", i, cell, r)
			}
		}
		var back CapabilityDocument
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		b2, _ := json.Marshal(back)
		if string(b) != string(b2) {
			t.Errorf("round trip differs:\n%s\n%s", b, b2)
		}
	}
	// The exact keys a TS client reads, nulls included.
	d := NegotiateCapabilities(context.Background(), NegotiationContext{SessionID: "s", Enrollment: nil, Now: capNow})
	b, _ := json.Marshal(d)
	for _, want := range []string{`"transport":null`, `"client":null`, `"url":null`, `"token":null`, `"expiresAt":null`,
		`"reason":"agent_offline"`, `"sharedSessionIds":[]`, `"repos":[]`, `"modes":[]`, `"codecs":[]`, `"resolution":[1024,768]`,
		`"negotiatedAt":"2026-06-22T12:00:00.000Z"`, `"viewerHeartbeatIntervalMs":30000`, `"liveness":"cold"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
}

// The probe: ProbeResponded wins; else the session is pinged; else a miss.
func TestNegotiateProbe(t *testing.T) {
	var calls int
	d := NegotiateCapabilities(context.Background(), NegotiationContext{Enrollment: defaultEnrollment(), Session: pingSession(t, true, &calls), Now: capNow})
	if calls != 1 || d.Liveness != "warm" || !d.FileSystem.Available {
		t.Fatalf("online session: calls %d, doc %+v", calls, d.FileSystem)
	}
	d = NegotiateCapabilities(context.Background(), NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = at(-5 * time.Second) }), Session: pingSession(t, false, &calls), Now: capNow})
	if calls != 2 || d.FileSystem.Reason != ReasonAgentReconnecting {
		t.Fatalf("offline session: calls %d, FS %+v", calls, d.FileSystem)
	}
	d = NegotiateCapabilities(context.Background(), NegotiationContext{Enrollment: defaultEnrollment(), Session: pingSession(t, true, &calls), ProbeResponded: boolp(false), Now: capNow.Add(time.Hour)})
	if calls != 2 || d.FileSystem.Reason != ReasonAgentOffline {
		t.Fatalf("explicit probe: calls %d, FS %+v", calls, d.FileSystem)
	}
	d = NegotiateCapabilities(context.Background(), NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { n := time.Now(); e.LastSeenAt = &n })})
	if d.Liveness != "cold" || d.FileSystem.Reason != ReasonAgentReconnecting {
		t.Fatalf("no probe, fresh last seen with the real clock: %+v", d.FileSystem)
	}
}

// The next revision's machine report in negotiation: without one the
// document is v1's (no Machine key at all); with one, a machine that said
// why it has no desktop reads display_unavailable whatever the enrollment
// says, and the Machine cell explains pressure and unsupported features.
func TestNegotiateWithMachineReport(t *testing.T) {
	online := true
	v1 := Negotiate(NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online, Now: capNow}, Liveness{StateOnline, true, true})
	if b, _ := json.Marshal(v1); v1.Machine != nil || strings.Contains(string(b), `"Machine"`) {
		t.Fatalf("v1 document grew a Machine cell: %s", b)
	}

	report := &MachineReport{NoDesktop: true, DesktopUnavailableReason: "Screen Recording permission is off (System Settings → Privacy)",
		OpStream: true, MemTotalBytes: 16 << 30,
		Capacity: &HostCapacity{MemAvailableBytes: 300 << 20, DiskFreeBytes: 100 << 30, FdHeadroom: 60000, PidHeadroom: 30000, Nproc: 8}}
	d := NegotiateCapabilities(context.Background(), NegotiationContext{Enrollment: defaultEnrollment(), ProbeResponded: &online, Report: report, Now: capNow})
	if d.DesktopStream.Reason != ReasonDisplayUnavailable || d.ComputerUse.Available || d.Recording.Available || !d.FileSystem.Available {
		t.Fatalf("desktop cells: %+v %+v %+v", d.DesktopStream, d.ComputerUse, d.Recording)
	}
	m := d.Machine
	if m == nil || !m.OpStream || m.ResourcePolicy || m.CPUQuota {
		t.Fatalf("machine cell %+v", m)
	}
	want := []string{
		"desktop unavailable: Screen Recording permission is off (System Settings → Privacy)",
		"machine under memory pressure: 300 MiB available of 16384 MiB", // under 5% of 16 GiB
		"resource policy unsupported: the machine cannot enforce per-op memory limits (no delegated cgroup v2 subtree)",
	}
	if !slices.Equal(m.Notes, want) || len(m.Pressure) != 1 || m.Pressure[0].Kind != PressureMemory {
		t.Fatalf("notes %q\npressure %+v", m.Notes, m.Pressure)
	}
	b, _ := json.Marshal(d)
	if !strings.Contains(string(b), `"Machine":{"opStream":true,"resourcePolicy":false,"cpuQuota":false,"draining":false,"pressure":[{"kind":"memory"`) {
		t.Fatalf("json %s", b)
	}

	// Offline: the liveness reasons stand; the cell explains nothing more.
	off := false
	d = NegotiateCapabilities(context.Background(), NegotiationContext{Enrollment: defaultEnrollment(func(e *Enrollment) { e.LastSeenAt = nil }), ProbeResponded: &off, Report: report, Now: capNow})
	if d.FileSystem.Reason != ReasonAgentOffline || len(d.Machine.Notes) != 0 {
		t.Fatalf("offline: %+v %+v", d.FileSystem, d.Machine)
	}
}

func TestMachinePressures(t *testing.T) {
	roomy := HostCapacity{MemAvailableBytes: 8 << 30, DiskFreeBytes: 50 << 30, FdHeadroom: 1000, PidHeadroom: 1000}
	tests := []struct {
		name  string
		total uint64
		mod   func(*HostCapacity)
		want  []string
	}{
		{"roomy", 16 << 30, nil, nil},
		{"memory under 5% of the total", 64 << 30, func(c *HostCapacity) { c.MemAvailableBytes = 3 << 30 }, []string{PressureMemory}},
		{"memory above 5% of the total", 16 << 30, func(c *HostCapacity) { c.MemAvailableBytes = 1 << 30 }, nil},
		{"memory under the floor, total unknown", 0, func(c *HostCapacity) { c.MemAvailableBytes = 100 << 20 }, []string{PressureMemory}},
		{"disk", 16 << 30, func(c *HostCapacity) { c.DiskFreeBytes = 500 << 20 }, []string{PressureDisk}},
		{"fds and pids", 16 << 30, func(c *HostCapacity) { c.FdHeadroom, c.PidHeadroom = 10, 3 }, []string{PressureFDs, PressurePIDs}},
	}
	for _, tc := range tests {
		c := roomy
		if tc.mod != nil {
			tc.mod(&c)
		}
		var got []string
		for _, p := range (MachineReport{MemTotalBytes: tc.total, Capacity: &c}).Pressures() {
			got = append(got, p.Kind)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if (MachineReport{}).Pressures() != nil {
		t.Error("pressure invented without telemetry")
	}
}

func TestAdmitOperation(t *testing.T) {
	online := Liveness{State: StateOnline, Consented: true, HasDisplay: true}
	full := MachineReport{OpStream: true, ResourcePolicy: true, CPUQuota: true,
		Capacity: &HostCapacity{MemAvailableBytes: 8 << 30, DiskFreeBytes: 50 << 30, FdHeadroom: 1000, PidHeadroom: 1000}}
	with := func(f func(*MachineReport)) MachineReport {
		r := full
		c := *full.Capacity
		r.Capacity = &c
		f(&r)
		return r
	}
	mem := &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(1 << 30)}
	cpu := &agentpb.OperationResourcePolicy{CpuMaxMillicores: proto.Uint32(500)}
	tests := []struct {
		name     string
		live     Liveness
		r        MachineReport
		req      OperationRequest
		reason   UnavailableReason // "" = allowed
		message  string            // substring of the refusal or of a warning
		warnings int
	}{
		{"plain exec", online, full, OperationRequest{Op: "exec"}, "", "", 0},
		{"offline", Liveness{State: StateOffline}, full, OperationRequest{Op: "exec"}, ReasonAgentOffline, "machine offline", 0},
		{"reconnecting", Liveness{State: StateReconnecting}, full, OperationRequest{Op: "fs_read"}, ReasonAgentReconnecting, "reconnecting", 0},
		{"draining", online, with(func(r *MachineReport) { r.Draining = true }), OperationRequest{Op: "exec"}, ReasonAgentDraining, "machine draining", 0},
		{"memory policy, no cgroups", online, with(func(r *MachineReport) { r.ResourcePolicy, r.CPUQuota = false, false }),
			OperationRequest{Op: "exec", ResourcePolicy: mem}, ReasonResourcePolicyUnsupported, "resource policy unsupported: the machine cannot enforce per-op memory limits", 0},
		{"cpu policy, memory only", online, with(func(r *MachineReport) { r.CPUQuota = false }),
			OperationRequest{Op: "git", ResourcePolicy: cpu}, ReasonResourcePolicyUnsupported, "CPU quotas", 0},
		{"memory policy, memory only", online, with(func(r *MachineReport) { r.CPUQuota = false }), OperationRequest{Op: "exec", ResourcePolicy: mem}, "", "", 0},
		{"op-stream to a v1 agent", online, with(func(r *MachineReport) { r.OpStream = false }), OperationRequest{Op: "op_start", OpStream: true}, ReasonOpStreamUnsupported, "op-stream unsupported", 0},
		{"screenshot without a display", Liveness{State: StateOnline}, full, OperationRequest{Op: "screenshot"}, ReasonDisplayUnavailable, "desktop unavailable: the machine reports no display", 0},
		{"screenshot, machine's reason", online, with(func(r *MachineReport) {
			r.NoDesktop, r.DesktopUnavailableReason = true, "no X11 display (DISPLAY is unset)"
		}),
			OperationRequest{Op: "screenshot"}, ReasonDisplayUnavailable, "desktop unavailable: no X11 display (DISPLAY is unset)", 0},
		{"input when only input is missing", online, with(func(r *MachineReport) { r.DesktopUnavailableReason = "desktop input unavailable: no XTEST" }),
			OperationRequest{Op: "input"}, ReasonDisplayUnavailable, "desktop input unavailable: no XTEST", 0},
		{"screenshot when only input is missing", online, with(func(r *MachineReport) { r.DesktopUnavailableReason = "desktop input unavailable: no XTEST" }),
			OperationRequest{Op: "screenshot"}, "", "", 0},
		{"exec under memory pressure warns", online, with(func(r *MachineReport) { r.Capacity.MemAvailableBytes = 50 << 20 }),
			OperationRequest{Op: "exec"}, "", "machine under memory pressure: 50 MiB available", 1},
		{"a read under memory pressure does not", online, with(func(r *MachineReport) { r.Capacity.MemAvailableBytes = 50 << 20 }), OperationRequest{Op: "fs_read"}, "", "", 0},
		{"a write bigger than the free disk", online, with(func(r *MachineReport) { r.Capacity.DiskFreeBytes = 100 << 20 }),
			OperationRequest{Op: "fs_write", WriteBytes: 200 << 20}, ReasonMachinePressure, "not enough disk: writing 200 MiB, 100 MiB free", 0},
		{"a write that fits a low disk warns", online, with(func(r *MachineReport) { r.Capacity.DiskFreeBytes = 100 << 20 }),
			OperationRequest{Op: "fs_write", WriteBytes: 1 << 20}, "", "machine low on disk", 1},
		{"v1 agent: no telemetry, plain exec", online, MachineReport{}, OperationRequest{Op: "exec"}, "", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := AdmitOperation(tc.live, tc.r, tc.req)
			if a.Allowed != (tc.reason == "") || a.Reason != tc.reason || len(a.Warnings) != tc.warnings || a.Warnings == nil {
				t.Fatalf("%+v", a)
			}
			if text := a.Message + strings.Join(a.Warnings, "|"); !strings.Contains(text, tc.message) || (tc.reason != "" && a.Message == "") {
				t.Fatalf("message %q lacks %q", text, tc.message)
			}
		})
	}
}
