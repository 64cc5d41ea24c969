package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Fleet update failure codes (AgentUpdateProgress.error_code with stage
// FAILED). The wire leaves the vocabulary open; these name the gate that
// refused, so a control plane can tell a bad release from a busy machine.
const (
	UpdateErrNotIdle        = "NOT_IDLE"        // other ops kept running past the idle bound (retryable)
	UpdateErrDownload       = "DOWNLOAD"        // release origin unreachable or refused (retryable)
	UpdateErrSignature      = "SIGNATURE"       // manifest or artifact not signed by the pinned key
	UpdateErrChecksum       = "CHECKSUM"        // artifact sha256 differs from the signed manifest
	UpdateErrManifest       = "MANIFEST"        // malformed manifest, or no artifact for this target
	UpdateErrVersionGate    = "VERSION_GATE"    // a downgrade, the same version, or below min_supported
	UpdateErrTargetMismatch = "TARGET_MISMATCH" // the channel serves another version than requested (retryable)
	UpdateErrHealthCheck    = "HEALTH_CHECK"    // the new binary failed its health gate (rolled back)
	UpdateErrApply          = "APPLY"           // the swap or the completion record failed
)

// DefaultUpdateIdleTimeout bounds WAITING_FOR_IDLE: an update never cuts a
// user's running command short; past this the op fails NOT_IDLE
// (retryable) and the control plane tries again later.
const DefaultUpdateIdleTimeout = 10 * time.Minute

// maxUpdateOps bounds the operation ids remembered for idempotency.
const maxUpdateOps = 64

// SelfUpdateOptions configure the fleet update (AgentUpdateApply).
type SelfUpdateOptions struct {
	// Executable is the binary to replace; default os.Executable with
	// symlinks resolved.
	Executable string
	// BaseURL is the release origin when a request names none; default
	// update.DefaultBaseURL. A request's release_base_url is used as given:
	// trust comes from the pinned signing key, never from the origin.
	BaseURL string
	// PublicKey is the minisign key text; default the pinned update.PublicKey.
	PublicKey     string
	IdleTimeout   time.Duration // WAITING_FOR_IDLE bound; default DefaultUpdateIdleTimeout
	HealthTimeout time.Duration // the new binary's health gate; default 15s
	HTTPClient    *http.Client
	// Restart makes the process run the new binary. It is called once,
	// after the new binary passed its health gate, the completion record
	// was written and RESTARTING was published. It must stop every
	// connection with the given cause (so each announces GoingOffline
	// UPDATE and drains) and then restart the process. Required.
	Restart func(StopReason)
	Logger  *slog.Logger
}

// CompletedUpdate is the record an applied fleet update leaves beside the
// binary (<exe>.update.json). The restarted agent reports it in every
// Hello (completed_update_*) while it runs that binary.
type CompletedUpdate struct {
	OperationID   string    `json:"operationId"`
	TargetVersion string    `json:"targetVersion"`
	BinarySHA256  string    `json:"binarySha256"`
	FromVersion   string    `json:"fromVersion"`
	CompletedAt   time.Time `json:"completedAt"`
	// Confirmed is set once the new binary connected and said Hello;
	// until then each start counts in Boots (the boot probation).
	Confirmed bool `json:"confirmed"`
	Boots     int  `json:"boots"`
}

// MaxUnconfirmedBoots is the boot probation of an updated binary: a binary
// that passed its health gate but starts this many times without ever
// connecting (a crash loop under the service manager) is rolled back to
// the previous one at its next start.
const MaxUnconfirmedBoots = 3

// ErrUpdateRolledBack is NewSelfUpdate's answer when the boot probation
// rolled the binary back: the caller restarts the process onto it.
var ErrUpdateRolledBack = errors.New("the updated binary never came online; rolled back to the previous one")

// CompletedUpdatePath is where the record of exe lives.
func CompletedUpdatePath(exe string) string { return exe + ".update.json" }

// SelfUpdate serves AgentUpdateApply for one process. A process serving
// several connections shares one: the binary, the idle check (every
// connection's dispatcher) and the idempotency ledger are process-wide.
type SelfUpdate struct {
	o   SelfUpdateOptions
	exe string
	sha string // of the running binary, read before any swap

	mu          sync.Mutex
	ops         map[string]*opRecord // by operation id
	order       []string             // ops in arrival order, for eviction
	running     string               // the op that owns the binary now ("" when none)
	completed   *CompletedUpdate     // the record of the running binary
	dispatchers map[*Dispatcher]struct{}
}

// opRecord is what a repeat of an operation id gets: the first answer, and
// the latest progress, published again so a control plane that re-runs a
// rollout re-attaches to its outcome (nothing is started again).
type opRecord struct {
	resp *agentpb.AgentUpdateApplyResponse
	last *agentpb.AgentUpdateProgress
}

// NewSelfUpdate resolves the binary, hashes it and loads its completion
// record. A record for another binary (it was replaced by other means
// since) is stale and removed.
func NewSelfUpdate(o SelfUpdateOptions) (*SelfUpdate, error) {
	if o.Restart == nil {
		return nil, errors.New("agent: SelfUpdateOptions.Restart is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Logger = o.Logger.With("component", "fleet-update")
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultUpdateIdleTimeout
	}
	exe := o.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("agent: locate the running binary: %w", err)
		}
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	sha := fileSHA256(exe)
	if sha == "" {
		return nil, fmt.Errorf("agent: cannot hash the running binary %s", exe)
	}
	su := &SelfUpdate{o: o, exe: exe, sha: sha, ops: map[string]*opRecord{},
		dispatchers: map[*Dispatcher]struct{}{}}
	if rec, err := readCompleted(exe); err == nil {
		if strings.EqualFold(rec.BinarySHA256, sha) {
			if !rec.Confirmed {
				if err := probation(exe, rec, o.Logger); err != nil {
					return nil, err
				}
			}
			su.completed = rec
		} else {
			o.Logger.Info("removing a stale update record: the binary changed since", "record", rec.OperationID)
			_ = os.Remove(CompletedUpdatePath(exe))
		}
	}
	return su, nil
}

// probation counts a start of an updated binary that has not come online
// yet; past MaxUnconfirmedBoots it restores the previous binary and
// returns ErrUpdateRolledBack.
func probation(exe string, rec *CompletedUpdate, log *slog.Logger) error {
	rec.Boots++
	if rec.Boots <= MaxUnconfirmedBoots {
		if err := writeCompleted(exe, rec); err != nil {
			log.Warn("could not count this start in the update record", "err", err)
		}
		return nil
	}
	if err := update.Rollback(exe); err != nil {
		log.Error("the updated binary never came online and the rollback failed", "operation_id", rec.OperationID, "err", err)
		return nil // keep running the new binary: nothing better to run
	}
	_ = os.Remove(CompletedUpdatePath(exe))
	log.Error("the updated binary never came online; rolled back to the previous one", "operation_id", rec.OperationID,
		"target_version", rec.TargetVersion, "starts", rec.Boots-1)
	return fmt.Errorf("%w (update %s to %s)", ErrUpdateRolledBack, rec.OperationID, rec.TargetVersion)
}

// confirm ends the boot probation: this binary connected and said Hello.
func (su *SelfUpdate) confirm() {
	su.mu.Lock()
	defer su.mu.Unlock()
	c := su.completed
	if c == nil || c.Confirmed {
		return
	}
	next := *c
	next.Confirmed = true
	if err := writeCompleted(su.exe, &next); err != nil {
		su.o.Logger.Warn("could not confirm the update record", "err", err)
		return
	}
	su.completed = &next
}

// Executable is the binary the updater replaces (the one to restart).
func (su *SelfUpdate) Executable() string { return su.exe }

// SHA256 is the hex sha256 of the binary this process runs.
func (su *SelfUpdate) SHA256() string { return su.sha }

// Completed is the update that installed the running binary, nil when none.
//
// There is no acknowledgement of Hello, so the record is not cleared after
// some number of Hellos: it describes the running binary and stays true
// until the binary changes (a newer operation replaces it; a binary changed
// by other means makes it stale and it is dropped at start). Reporting it
// in every Hello is idempotent for the control plane (keyed by operation
// id) and survives a control plane that missed the first Hellos.
func (su *SelfUpdate) Completed() *CompletedUpdate {
	su.mu.Lock()
	defer su.mu.Unlock()
	return su.completed
}

func (su *SelfUpdate) attach(d *Dispatcher) {
	su.mu.Lock()
	su.dispatchers[d] = struct{}{}
	su.mu.Unlock()
}

func (su *SelfUpdate) detach(d *Dispatcher) {
	su.mu.Lock()
	delete(su.dispatchers, d)
	su.mu.Unlock()
}

// updateRequest is one AgentUpdateApply with what the receiving connection adds.
type updateRequest struct {
	req     *agentpb.AgentUpdateApplyRequest
	agentID string
	channel string // the connection's update channel, when the request names none
	publish func(*agentpb.AgentUpdateProgress)
}

// apply answers an AgentUpdateApply at once and, when it is accepted, runs
// the update in the background. A repeated operation id gets the first
// answer (and its latest progress again) and starts nothing.
func (su *SelfUpdate) apply(r updateRequest) (*agentpb.AgentUpdateApplyResponse, error) {
	req := r.req
	id := req.GetOperationId()
	if id == "" {
		return nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_PROTOCOL, "agent_update_apply: operation_id is required")
	}
	su.mu.Lock()
	if prev, ok := su.ops[id]; ok {
		resp, last := cloneResponse(prev.resp), prev.last
		su.mu.Unlock()
		if last != nil {
			r.publish(cloneProgress(last))
		}
		return resp, nil
	}
	if c := su.completed; c != nil && c.OperationID == id {
		// This binary is that operation's result (we restarted onto it).
		resp := &agentpb.AgentUpdateApplyResponse{Accepted: true, OperationId: id, CurrentVersion: Version,
			CurrentSha256: su.sha, TargetVersion: c.TargetVersion}
		su.remember(id, resp)
		su.mu.Unlock()
		return cloneResponse(resp), nil
	}
	if err := su.fence(req); err != nil {
		su.mu.Unlock()
		return nil, err
	}
	if su.running != "" {
		running := su.running
		su.mu.Unlock()
		return nil, &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_FENCED, Retryable: true,
			Message: fmt.Sprintf("agent_update_apply: update %s is already in progress on this machine; retry after it ends", running),
			Detail:  map[string]string{"reason": "update_in_progress", "operation_id": running}}
	}
	resp := &agentpb.AgentUpdateApplyResponse{OperationId: id, CurrentVersion: Version, CurrentSha256: su.sha,
		TargetVersion: req.GetTargetVersion()}
	if t := req.GetTargetVersion(); t != "" && sameVersion(t, Version) {
		// Already running the target: nothing to start (accepted=false,
		// current_version == target_version says why).
		su.mu.Unlock()
		return resp, nil
	}
	resp.Accepted = true
	su.remember(id, resp)
	su.running = id
	su.mu.Unlock()

	op := &updateOp{su: su, r: r, progress: &agentpb.AgentUpdateProgress{OperationId: id, TargetVersion: req.GetTargetVersion()}}
	// ACCEPTED goes out before the answer, so a caller that subscribed
	// first sees every stage of this operation in order.
	op.stage(agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED)
	go op.run()
	return cloneResponse(resp), nil
}

// fence refuses an update aimed at another binary than the running one.
func (su *SelfUpdate) fence(req *agentpb.AgentUpdateApplyRequest) error {
	if v := req.GetExpectedCurrentVersion(); v != "" && !sameVersion(v, Version) {
		return &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_FENCED,
			Message: fmt.Sprintf("agent_update_apply: expected current version %s, but this agent runs %s", v, Version),
			Detail:  map[string]string{"reason": "version_mismatch", "expected": v, "actual": Version}}
	}
	if s := req.GetExpectedCurrentSha256(); s != "" && !strings.EqualFold(strings.TrimSpace(s), su.sha) {
		return &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_FENCED,
			Message: fmt.Sprintf("agent_update_apply: expected current binary sha256 %s, but the running binary is %s", s, su.sha),
			Detail:  map[string]string{"reason": "sha256_mismatch", "expected": s, "actual": su.sha}}
	}
	return nil
}

// remember records an answer for idempotency, evicting the oldest. Call
// with su.mu held.
func (su *SelfUpdate) remember(id string, resp *agentpb.AgentUpdateApplyResponse) {
	su.ops[id] = &opRecord{resp: resp}
	su.order = append(su.order, id)
	for len(su.order) > maxUpdateOps {
		if su.order[0] != su.running {
			delete(su.ops, su.order[0])
		}
		su.order = su.order[1:]
	}
}

func (su *SelfUpdate) finished(id string) {
	su.mu.Lock()
	if su.running == id {
		su.running = ""
	}
	su.mu.Unlock()
}

// waitIdle returns once no connection has an op in flight, or ctx ends.
// Dispatcher.Wait blocks on its idle signal; a pass that finds every
// dispatcher idle at once (a Wait with an ended context only reports) ends it.
func (su *SelfUpdate) waitIdle(ctx context.Context) error {
	probe, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		su.mu.Lock()
		ds := make([]*Dispatcher, 0, len(su.dispatchers))
		for d := range su.dispatchers {
			ds = append(ds, d)
		}
		su.mu.Unlock()
		for _, d := range ds {
			if err := d.Wait(ctx); err != nil {
				return err
			}
		}
		idle := true
		for _, d := range ds {
			if d.Wait(probe) != nil {
				idle = false
				break
			}
		}
		if idle {
			return nil
		}
	}
}

// updateOp is one accepted operation running in the background.
type updateOp struct {
	su       *SelfUpdate
	r        updateRequest
	progress *agentpb.AgentUpdateProgress
}

func (op *updateOp) stage(s agentpb.AgentUpdateStage) {
	p := cloneProgress(op.progress)
	p.Stage = s
	op.publish(p)
}

// publish records p as the operation's latest progress and sends it.
func (op *updateOp) publish(p *agentpb.AgentUpdateProgress) {
	op.su.mu.Lock()
	if rec, ok := op.su.ops[p.GetOperationId()]; ok {
		rec.last = cloneProgress(p)
	}
	op.su.mu.Unlock()
	op.r.publish(p)
}

func (op *updateOp) fail(code string, retryable, rolledBack bool, err error) {
	op.su.o.Logger.Warn("fleet update failed", "operation_id", op.progress.OperationId, "error_code", code,
		"retryable", retryable, "rolled_back", rolledBack, "err", err)
	p := cloneProgress(op.progress)
	p.Stage, p.ErrorCode, p.Retryable, p.RolledBack = agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED, code, retryable, rolledBack
	// Free the binary before saying FAILED: a control plane that reacts to
	// the event with a new operation must not find this one still running.
	op.su.finished(op.progress.OperationId)
	op.publish(p)
}

func (op *updateOp) run() {
	su, req := op.su, op.r.req
	log := su.o.Logger.With("operation_id", req.GetOperationId(), "target_version", req.GetTargetVersion())
	op.stage(agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE)
	idleCtx, cancel := context.WithTimeout(context.Background(), su.o.IdleTimeout)
	err := su.waitIdle(idleCtx)
	cancel()
	if err != nil {
		op.fail(UpdateErrNotIdle, true, false, fmt.Errorf("other operations kept running for %s: %w", su.o.IdleTimeout, err))
		return
	}

	ctx := context.Background()
	channel := req.GetChannel()
	if channel == "" {
		channel = op.r.channel
	}
	base := req.GetReleaseBaseUrl()
	if base == "" {
		base = su.o.BaseURL
	}
	u, err := update.New(update.Options{
		BaseURL: base, Channel: channel, AgentID: op.r.agentID, CurrentVersion: Version,
		PublicKey: su.o.PublicKey, Executable: su.exe, HTTPClient: su.o.HTTPClient, HealthTimeout: su.o.HealthTimeout,
		// The control plane chose this machine: the staged-rollout cohort
		// is for machines polling on their own. Signature, checksum and
		// version gates all still apply.
		Force: true,
		Progress: func(s update.Stage) {
			switch s {
			case update.StageDownloading:
				op.stage(agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING)
			case update.StageVerifying:
				op.stage(agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_VERIFYING)
			}
		},
		Logger: su.o.Logger,
	})
	if err != nil {
		op.fail(UpdateErrSignature, false, false, err)
		return
	}
	res, err := u.Check(ctx)
	if err != nil {
		code, retryable := checkFailure(err)
		op.fail(code, retryable, false, err)
		return
	}
	if !res.Available {
		op.fail(UpdateErrVersionGate, false, false, errors.New(res.Reason))
		return
	}
	if t := req.GetTargetVersion(); t != "" && !sameVersion(t, res.Manifest.Version) {
		op.fail(UpdateErrTargetMismatch, true, false, fmt.Errorf("channel %s serves %s, not the requested %s", channel, res.Manifest.Version, t))
		return
	}
	op.progress.TargetVersion = res.Manifest.Version
	op.progress.ExpectedBinarySha256 = strings.ToLower(res.Artifact.SHA256)

	op.stage(agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_APPLYING)
	ap, err := u.Apply(ctx, res) // swap, health gate, rollback on failure
	if err != nil {
		code := UpdateErrApply
		if errors.Is(err, update.ErrHealthCheck) {
			code = UpdateErrHealthCheck
		}
		op.fail(code, false, ap != nil && ap.RolledBack, err)
		return
	}
	rec := &CompletedUpdate{OperationID: req.GetOperationId(), TargetVersion: res.Manifest.Version,
		BinarySHA256: op.progress.ExpectedBinarySha256, FromVersion: Version, CompletedAt: time.Now().UTC()}
	if err := writeCompleted(su.exe, rec); err != nil {
		rerr := update.Rollback(su.exe)
		op.fail(UpdateErrApply, false, rerr == nil, fmt.Errorf("record the completed update: %w", err))
		return
	}
	log.Info("new binary installed and healthy; restarting onto it", "from", Version, "to", res.Manifest.Version)
	op.stage(agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_RESTARTING)
	su.o.Restart(StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_UPDATE,
		Message: fmt.Sprintf("restarting onto %s (update %s)", res.Manifest.Version, req.GetOperationId())})
}

// checkFailure maps an update.Check error to its failure code and whether
// retrying may help (only a download problem is transient).
func checkFailure(err error) (string, bool) {
	switch {
	case errors.Is(err, update.ErrDownload):
		return UpdateErrDownload, true
	case errors.Is(err, update.ErrSignature):
		return UpdateErrSignature, false
	case errors.Is(err, update.ErrChecksum):
		return UpdateErrChecksum, false
	}
	return UpdateErrManifest, false
}

func sameVersion(a, b string) bool {
	return strings.TrimPrefix(strings.TrimSpace(a), "v") == strings.TrimPrefix(strings.TrimSpace(b), "v")
}

func readCompleted(exe string) (*CompletedUpdate, error) {
	b, err := os.ReadFile(CompletedUpdatePath(exe))
	if err != nil {
		return nil, err
	}
	var rec CompletedUpdate
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	if rec.OperationID == "" || rec.BinarySHA256 == "" {
		return nil, errors.New("incomplete update record")
	}
	return &rec, nil
}

// writeCompleted replaces the record atomically (temp + rename), so a
// crash leaves the old record or the new one.
func writeCompleted(exe string, rec *CompletedUpdate) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	path := CompletedUpdatePath(exe)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func cloneResponse(r *agentpb.AgentUpdateApplyResponse) *agentpb.AgentUpdateApplyResponse {
	return proto.Clone(r).(*agentpb.AgentUpdateApplyResponse)
}

func cloneProgress(p *agentpb.AgentUpdateProgress) *agentpb.AgentUpdateProgress {
	return proto.Clone(p).(*agentpb.AgentUpdateProgress)
}
