package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Machine is what the platform knows about a connected machine from its
// Hello and events.
type Machine struct {
	WorkspaceID  string `json:"workspaceId"`
	AgentID      string `json:"agentId"`
	OS           string `json:"os,omitempty"`   // linux | macos | windows | unknown
	Arch         string `json:"arch,omitempty"` // x86_64 | aarch64 | unknown
	AgentVersion string `json:"agentVersion,omitempty"`
	// Instance is the connection instance of the latest next-revision
	// Hello (agent.<ws>.<id>.connection.<instance>.hello); "" for v1 agents.
	Instance      string        `json:"instance,omitempty"`
	MachineName   string        `json:"machineName,omitempty"`
	WorkspaceRoot string        `json:"workspaceRoot,omitempty"`
	UpdateChannel string        `json:"updateChannel,omitempty"`
	Capabilities  *Capabilities `json:"capabilities,omitempty"`
	HelloAt       *time.Time    `json:"helloAt,omitempty"`
	LastSeenAt    *time.Time    `json:"lastSeenAt"`
	// WentOfflineAt is set by GoingOffline and cleared by the next Hello or
	// ingested heartbeat; while set the machine reads offline.
	WentOfflineAt     *time.Time     `json:"wentOfflineAt"`
	WentOfflineReason string         `json:"wentOfflineReason,omitempty"`
	LatestMetrics     *MetricsPoint  `json:"latestMetrics,omitempty"`
	Heartbeat         *HeartbeatInfo `json:"heartbeat,omitempty"`
	// BinarySHA256 is the running binary's sha256 from the latest Hello.
	BinarySHA256 string `json:"binarySha256,omitempty"`
	// CompletedUpdate is the fleet update that installed the running
	// binary, as the latest Hello reports it (nil when none).
	CompletedUpdate *CompletedUpdate `json:"completedUpdate,omitempty"`
	// Updates are the fleet update operations seen for this machine, the
	// latest stage of each, newest last (at most MaxUpdatesKept).
	Updates []UpdateProgress `json:"updates,omitempty"`
}

// CompletedUpdate is Hello's completed_update_*.
type CompletedUpdate struct {
	OperationID   string `json:"operationId"`
	TargetVersion string `json:"targetVersion"`
	BinarySHA256  string `json:"binarySha256"`
}

// UpdateProgress is the latest AgentUpdateProgress of one operation.
type UpdateProgress struct {
	OperationID          string `json:"operationId"`
	TargetVersion        string `json:"targetVersion,omitempty"`
	Stage                string `json:"stage"` // accepted | waiting_for_idle | downloading | verifying | applying | restarting | failed
	ExpectedBinarySHA256 string `json:"expectedBinarySha256,omitempty"`
	ErrorCode            string `json:"errorCode,omitempty"`
	Retryable            bool   `json:"retryable,omitempty"`
	RolledBack           bool   `json:"rolledBack,omitempty"`
	// Completed is set when a Hello reported this operation as the one
	// that installed the running binary (the only proof it finished).
	Completed bool      `json:"completed,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// MaxUpdatesKept bounds Machine.Updates.
const MaxUpdatesKept = 16

// UpdateStageName is the lowercase name of a stage ("unspecified" when unset).
func UpdateStageName(s agentpb.AgentUpdateStage) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "AGENT_UPDATE_STAGE_"))
}

// Update returns the latest progress of operation id.
func (m *Machine) Update(id string) (UpdateProgress, bool) {
	for _, u := range m.Updates {
		if u.OperationID == id {
			return u, true
		}
	}
	return UpdateProgress{}, false
}

// putUpdate replaces (or appends) op's entry through f, keeping the newest
// MaxUpdatesKept.
func (m *Machine) putUpdate(id string, f func(*UpdateProgress)) {
	u, _ := m.Update(id)
	u.OperationID = id
	f(&u)
	out := make([]UpdateProgress, 0, len(m.Updates)+1)
	for _, e := range m.Updates {
		if e.OperationID != id {
			out = append(out, e)
		}
	}
	out = append(out, u)
	if len(out) > MaxUpdatesKept {
		out = out[len(out)-MaxUpdatesKept:]
	}
	m.Updates = out
}

// Capabilities are the Hello capabilities.
type Capabilities struct {
	Exec                   bool     `json:"exec"`
	FileSystem             bool     `json:"filesystem"`
	Git                    bool     `json:"git"`
	Pty                    bool     `json:"pty"`
	Desktop                bool     `json:"desktop"`
	ConsentedWholeMachine  bool     `json:"consentedWholeMachine"`
	ConsentedScreenControl bool     `json:"consentedScreenControl"`
	Display                *Display `json:"display,omitempty"`
	// The next revision's capability honesty (control.md §9).
	DesktopUnavailableReason string `json:"desktopUnavailableReason,omitempty"`
	OpStream                 bool   `json:"opStream,omitempty"`
	OperationResourcePolicy  bool   `json:"operationResourcePolicy,omitempty"`
	OperationCPUQuota        bool   `json:"operationCpuQuota,omitempty"`
}

// Report is what the machine last said about itself, for capability
// negotiation and operation admission (control.NegotiationContext.Report,
// control.AdmitOperation).
func (m *Machine) Report() control.MachineReport {
	var r control.MachineReport
	if c := m.Capabilities; c != nil {
		r.NoDesktop, r.DesktopUnavailableReason, r.OpStream = !c.Desktop, c.DesktopUnavailableReason, c.OpStream
		r.ResourcePolicy, r.CPUQuota = c.OperationResourcePolicy, c.OperationCPUQuota
	}
	if h := m.Heartbeat; h != nil {
		r.Draining, r.Capacity, r.Admission = h.Draining, h.Capacity, h.Admission
	}
	if p := m.LatestMetrics; p != nil {
		r.MemTotalBytes = p.MemTotalBytes
	}
	return r
}

// Display is the Hello display.
type Display struct {
	ID      string `json:"id"`
	Width   uint32 `json:"width"`
	Height  uint32 `json:"height"`
	Virtual bool   `json:"virtual"`
}

// HeartbeatInfo is the last heartbeat's envelope (besides its metrics).
type HeartbeatInfo struct {
	Seq            uint64 `json:"seq"`
	UptimeMs       uint64 `json:"uptimeMs"`
	ActiveSessions uint32 `json:"activeSessions"`
	Draining       bool   `json:"draining"`
	// Capacity and Admission are the next revision's heartbeat telemetry
	// (nil from v1 agents).
	Capacity  *HostCapacity `json:"capacity,omitempty"`
	Admission *Admission    `json:"admission,omitempty"`
}

// HostCapacity is a heartbeat's HostCapacitySample.
type HostCapacity = control.HostCapacity

// Admission is a heartbeat's AdmissionTelemetry.
type Admission = control.AdmissionTelemetry

func heartbeatInfo(hb *agentpb.Heartbeat) *HeartbeatInfo {
	h := &HeartbeatInfo{Seq: hb.GetSeq(), UptimeMs: hb.GetUptimeMs(), ActiveSessions: hb.GetActiveSessions(), Draining: hb.GetDraining()}
	if c := hb.GetCapacity(); c != nil {
		h.Capacity = &HostCapacity{MemAvailableBytes: c.GetMemAvailableBytes(), DiskFreeBytes: c.GetDiskFreeBytes(),
			FdHeadroom: c.GetFdHeadroom(), PidHeadroom: c.GetPidHeadroom(), Nproc: c.GetNproc()}
	}
	if a := hb.GetAdmission(); a != nil {
		h.Admission = &Admission{LightRunning: a.GetLightRunning(), LightQueued: a.GetLightQueued(), HeavyRunning: a.GetHeavyRunning(),
			HeavyQueued: a.GetHeavyQueued(), LiveOps: a.GetLiveOps(), OpFramesDroppedTotal: a.GetOpFramesDroppedTotal(),
			EvictedUnackedTotal: a.GetEvictedUnackedTotal()}
	}
	return h
}

// MetricsPoint is one metrics sample as the platform keeps it (the
// reference's machine_metrics_latest / _series mapping): the first GPU only,
// run_queue as contention.
type MetricsPoint struct {
	SampledAt        time.Time `json:"sampledAt"`
	CPUPercent       float64   `json:"cpuPercent"`
	Load1            float64   `json:"load1"`
	Load5            float64   `json:"load5"`
	Load15           float64   `json:"load15"`
	MemUsedBytes     uint64    `json:"memUsedBytes"`
	MemTotalBytes    uint64    `json:"memTotalBytes"`
	DiskUsedBytes    uint64    `json:"diskUsedBytes"`
	DiskTotalBytes   uint64    `json:"diskTotalBytes"`
	GPUUtilPercent   *float64  `json:"gpuUtilPercent"`
	GPUMemUsedBytes  *uint64   `json:"gpuMemUsedBytes"`
	GPUMemTotalBytes *uint64   `json:"gpuMemTotalBytes"`
	Contention       float64   `json:"contention"`
}

// PointFromSample maps a MetricsSample: sampledAt = sampled_at_ms when > 0,
// else now.
func PointFromSample(m *agentpb.MetricsSample, now time.Time) MetricsPoint {
	p := MetricsPoint{
		SampledAt: now.UTC(), CPUPercent: m.GetCpuPercent(),
		Load1: m.GetLoad1(), Load5: m.GetLoad5(), Load15: m.GetLoad15(),
		MemUsedBytes: m.GetMemUsedBytes(), MemTotalBytes: m.GetMemTotalBytes(),
		DiskUsedBytes: m.GetDiskUsedBytes(), DiskTotalBytes: m.GetDiskTotalBytes(),
		Contention: m.GetRunQueue(),
	}
	if ms := m.GetSampledAtMs(); ms > 0 {
		p.SampledAt = time.UnixMilli(ms).UTC()
	}
	if gpus := m.GetGpus(); len(gpus) > 0 {
		u, used, total := gpus[0].GetUtilPercent(), gpus[0].GetMemUsedBytes(), gpus[0].GetMemTotalBytes()
		p.GPUUtilPercent, p.GPUMemUsedBytes, p.GPUMemTotalBytes = &u, &used, &total
	}
	return p
}

// OSName is the lowercase wire name of an Os ("unknown" when unset).
func OSName(o agentpb.Os) string {
	switch o {
	case agentpb.Os_OS_LINUX:
		return "linux"
	case agentpb.Os_OS_MACOS:
		return "macos"
	case agentpb.Os_OS_WINDOWS:
		return "windows"
	}
	return "unknown"
}

// ArchName is the lowercase wire name of an Arch ("unknown" when unset).
func ArchName(a agentpb.Arch) string {
	switch a {
	case agentpb.Arch_ARCH_X86_64:
		return "x86_64"
	case agentpb.Arch_ARCH_AARCH64:
		return "aarch64"
	}
	return "unknown"
}

func machineKey(ws, id string) string { return "m." + ws + "." + id }
func seriesKey(ws, id string) string  { return "s." + ws + "." + id }

// GetMachine returns the machine record (ErrNotFound before its first Hello
// or heartbeat).
func (s *Store) GetMachine(ctx context.Context, ws, id string) (Machine, error) {
	if !validID(ws) || !validID(id) {
		return Machine{}, ErrNotFound
	}
	m, _, err := getJSON[Machine](ctx, s.machines, machineKey(ws, id))
	return m, err
}

// OffersOpStream reports whether the machine's latest Hello offered
// op-stream (Capabilities.op_stream); false before its first Hello. It
// implements control.OpStreamResolver.
func (s *Store) OffersOpStream(ctx context.Context, ws, id string) (bool, error) {
	m, err := s.GetMachine(ctx, ws, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil && m.Capabilities != nil && m.Capabilities.OpStream, err
}

// MetricsSeries returns the downsampled series, oldest first.
func (s *Store) MetricsSeries(ctx context.Context, ws, id string) ([]MetricsPoint, error) {
	if !validID(ws) || !validID(id) {
		return nil, ErrNotFound
	}
	pts, _, err := getJSON[[]MetricsPoint](ctx, s.machines, seriesKey(ws, id))
	return pts, err
}

// updateMachine applies f to the machine record (created when absent) with
// compare-and-set, through the in-memory cache.
func (s *Store) updateMachine(ctx context.Context, ws, id string, f func(*Machine)) error {
	key := machineKey(ws, id)
	l := s.keyLock(key)
	l.Lock()
	defer l.Unlock()
	for range casRetries {
		s.machinesMu.Lock()
		c, ok := s.machineC[key]
		s.machinesMu.Unlock()
		if !ok {
			m, rev, err := getJSON[Machine](ctx, s.machines, key)
			if errors.Is(err, ErrNotFound) {
				m, rev = Machine{WorkspaceID: ws, AgentID: id}, 0
			} else if err != nil {
				return err
			}
			c = &cachedMachine{m: m, rev: rev}
		}
		next := c.m
		f(&next)
		rev, err := putJSON(ctx, s.machines, key, &next, c.rev)
		s.machinesMu.Lock()
		if err != nil {
			delete(s.machineC, key)
		} else {
			s.machineC[key] = &cachedMachine{m: next, rev: rev}
		}
		s.machinesMu.Unlock()
		if errors.Is(err, errCAS) {
			continue
		}
		return err
	}
	return ErrConflict
}

// keyLock is the stripe lock serializing updates of one machines-bucket key.
func (s *Store) keyLock(key string) *sync.Mutex {
	return &s.keyLocks[stripe(key, len(s.keyLocks))]
}

// stripe maps key to one of n stripes (FNV-1a, no allocation).
func stripe(key string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return int(h % uint32(n))
}

// appendSeries appends p when the series is empty or p is at least
// SeriesInterval after the last point, and drops points older than
// SeriesRetention before p.
func (s *Store) appendSeries(ctx context.Context, ws, id string, p MetricsPoint) error {
	key := seriesKey(ws, id)
	l := s.keyLock(key)
	l.Lock()
	defer l.Unlock()
	maxPoints := int(s.opts.SeriesRetention / s.opts.SeriesInterval)
	for range casRetries {
		s.machinesMu.Lock()
		c, ok := s.seriesC[key]
		s.machinesMu.Unlock()
		if !ok {
			pts, rev, err := getJSON[[]MetricsPoint](ctx, s.machines, key)
			if errors.Is(err, ErrNotFound) {
				pts, rev = nil, 0
			} else if err != nil {
				return err
			}
			c = &cachedSeries{pts: pts, rev: rev}
		}
		if n := len(c.pts); n > 0 && p.SampledAt.Sub(c.pts[n-1].SampledAt) < s.opts.SeriesInterval {
			s.machinesMu.Lock()
			s.seriesC[key] = c
			s.machinesMu.Unlock()
			return nil
		}
		cutoff := p.SampledAt.Add(-s.opts.SeriesRetention)
		next := make([]MetricsPoint, 0, len(c.pts)+1)
		for _, q := range c.pts {
			if q.SampledAt.After(cutoff) {
				next = append(next, q)
			}
		}
		next = append(next, p)
		if len(next) > maxPoints {
			next = next[len(next)-maxPoints:]
		}
		rev, err := putJSON(ctx, s.machines, key, next, c.rev)
		s.machinesMu.Lock()
		if err != nil {
			delete(s.seriesC, key)
		} else {
			s.seriesC[key] = &cachedSeries{pts: next, rev: rev}
		}
		s.machinesMu.Unlock()
		if errors.Is(err, errCAS) {
			continue
		}
		return err
	}
	return ErrConflict
}

// ApplyHello records a Hello (§6.5): os, arch, version, machine name,
// workspace root, capabilities and display; it clears a pending
// GoingOffline, and sets the enrollment's hasDisplay := desktop || display
// present (written only on a change). An unknown enrollment is a no-op.
func (s *Store) ApplyHello(ctx context.Context, ws, id string, h *agentpb.Hello) error {
	ok, err := s.enrollmentExists(ctx, ws, id)
	if err != nil || !ok {
		return err
	}
	now := s.Now().UTC()
	caps := h.GetCapabilities()
	hasDisplay := caps.GetDesktop() || caps.GetDisplay() != nil
	err = s.updateMachine(ctx, ws, id, func(m *Machine) {
		m.OS, m.Arch = OSName(h.GetOs()), ArchName(h.GetArch())
		m.AgentVersion, m.MachineName = h.GetAgentVersion(), h.GetMachineName()
		m.WorkspaceRoot, m.UpdateChannel = h.GetWorkspaceRoot(), h.GetUpdateChannel()
		c := &Capabilities{Exec: caps.GetExec(), FileSystem: caps.GetFilesystem(), Git: caps.GetGit(), Pty: caps.GetPty(),
			Desktop: caps.GetDesktop(), ConsentedWholeMachine: caps.GetConsentedWholeMachine(),
			ConsentedScreenControl: caps.GetConsentedScreenControl(), DesktopUnavailableReason: caps.GetDesktopUnavailableReason(),
			OpStream: caps.GetOpStream(), OperationResourcePolicy: caps.GetOperationResourcePolicy(), OperationCPUQuota: caps.GetOperationCpuQuota()}
		if d := caps.GetDisplay(); d != nil {
			c.Display = &Display{ID: d.GetId(), Width: d.GetWidth(), Height: d.GetHeight(), Virtual: d.GetVirtual()}
		}
		m.Capabilities, m.HelloAt = c, &now
		m.WentOfflineAt, m.WentOfflineReason = nil, ""
		m.BinarySHA256 = h.GetBinarySha256()
		m.CompletedUpdate = nil
		if id := h.GetCompletedUpdateOperationId(); id != "" {
			m.CompletedUpdate = &CompletedUpdate{OperationID: id, TargetVersion: h.GetCompletedUpdateTargetVersion(),
				BinarySHA256: h.GetCompletedUpdateBinarySha256()}
			// Hello reconciles update progress: the operation finished
			// when the binary it installed is the one running.
			if u, ok := m.Update(id); !ok || !u.Completed {
				m.putUpdate(id, func(u *UpdateProgress) {
					u.Completed = strings.EqualFold(h.GetCompletedUpdateBinarySha256(), h.GetBinarySha256()) || h.GetBinarySha256() == ""
					if u.TargetVersion == "" {
						u.TargetVersion = h.GetCompletedUpdateTargetVersion()
					}
					if u.Stage == "" {
						u.Stage = UpdateStageName(agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_RESTARTING)
					}
					u.UpdatedAt = now
				})
			}
		}
	})
	if err != nil {
		return err
	}
	return s.setHasDisplay(ctx, ws, id, hasDisplay)
}

// ApplyHeartbeat ingests a heartbeat (§6.5): only one with metrics counts.
// lastSeen = now, the latest metrics, and a series point at most every
// SeriesInterval. Revoked enrollments are still ingested; an unknown one is a
// no-op. It also clears a pending GoingOffline.
func (s *Store) ApplyHeartbeat(ctx context.Context, ws, id string, hb *agentpb.Heartbeat) error {
	if hb.GetMetrics() == nil {
		return nil
	}
	ok, err := s.enrollmentExists(ctx, ws, id)
	if err != nil || !ok {
		return err
	}
	now := s.Now().UTC()
	p := PointFromSample(hb.GetMetrics(), now)
	if err := s.updateMachine(ctx, ws, id, func(m *Machine) {
		m.LastSeenAt, m.LatestMetrics = &now, &p
		m.Heartbeat = heartbeatInfo(hb)
		m.WentOfflineAt, m.WentOfflineReason = nil, ""
	}); err != nil {
		return err
	}
	return s.appendSeries(ctx, ws, id, p)
}

// ApplyUpdateProgress keeps the latest stage of a fleet update operation.
// A later event for the same operation replaces the stage, except that a
// stage never moves backwards (events of one op arrive in order from one
// connection, but v1 and instance subjects both carry them). An unknown
// enrollment is a no-op.
func (s *Store) ApplyUpdateProgress(ctx context.Context, ws, id string, p *agentpb.AgentUpdateProgress) error {
	if p.GetOperationId() == "" {
		return fmt.Errorf("store: update progress without an operation id")
	}
	ok, err := s.enrollmentExists(ctx, ws, id)
	if err != nil || !ok {
		return err
	}
	now := s.Now().UTC()
	return s.updateMachine(ctx, ws, id, func(m *Machine) {
		if u, ok := m.Update(p.GetOperationId()); ok && stageRank(u.Stage) > stageRank(UpdateStageName(p.GetStage())) {
			return
		}
		m.putUpdate(p.GetOperationId(), func(u *UpdateProgress) {
			u.Stage = UpdateStageName(p.GetStage())
			if p.GetTargetVersion() != "" {
				u.TargetVersion = p.GetTargetVersion()
			}
			if p.GetExpectedBinarySha256() != "" {
				u.ExpectedBinarySHA256 = p.GetExpectedBinarySha256()
			}
			u.ErrorCode, u.Retryable, u.RolledBack = p.GetErrorCode(), p.GetRetryable(), p.GetRolledBack()
			u.UpdatedAt = now
		})
	})
}

// stageRank orders stages: FAILED and RESTARTING are terminal for an
// operation; the rest follow their wire numbers.
func stageRank(name string) int32 {
	return agentpb.AgentUpdateStage_value["AGENT_UPDATE_STAGE_"+strings.ToUpper(name)]
}

// ApplyGoingOffline marks the machine offline at once (the next revision's
// went_offline_at, control.md §9; v1 ignored it).
func (s *Store) ApplyGoingOffline(ctx context.Context, ws, id string, g *agentpb.GoingOffline) error {
	ok, err := s.enrollmentExists(ctx, ws, id)
	if err != nil || !ok {
		return err
	}
	now := s.Now().UTC()
	reason := strings.ToLower(strings.TrimPrefix(g.GetReason().String(), "GOING_OFFLINE_REASON_"))
	return s.updateMachine(ctx, ws, id, func(m *Machine) {
		m.WentOfflineAt, m.WentOfflineReason = &now, reason
	})
}

// parseAgentSubject splits "agent.<ws>.<id>.<tail>" (v1, exactly 4 tokens)
// or "agent.<ws>.<id>.connection.<inst>.<tail>" (next revision, exactly 6;
// inst is "" for v1).
func parseAgentSubject(subject, tail string) (ws, id, inst string, err error) {
	t := strings.Split(subject, ".")
	switch {
	case len(t) == 4 && t[0] == "agent" && t[3] == tail && t[1] != "" && t[2] != "":
		return t[1], t[2], "", nil
	case len(t) == 6 && t[0] == "agent" && t[3] == "connection" && t[5] == tail && t[1] != "" && t[2] != "" && t[4] != "":
		return t[1], t[2], t[4], nil
	}
	return "", "", "", fmt.Errorf("store: not an agent %s subject: %q", tail, subject)
}
