package agent

import (
	"context"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// PauseState is the machine owner's pause switch (`opengeni-agent pause`).
// While Paused every op but ping and metrics is refused.
type PauseState struct {
	Paused bool
	Until  time.Time // zero: until the owner resumes
}

// PauseWatchInterval is how often a running agent looks at the pause switch
// to tell the platform (Hello) and close terminals and the desktop stream.
// Ops read it themselves, on every request.
const PauseWatchInterval = 250 * time.Millisecond

// pauseExempt ops keep answering while paused: ping is how the platform
// sees the machine is alive (so it reports "paused", not "offline"), and
// metrics only samples load, memory and disk totals — nothing the platform
// did, and nothing of the owner's files.
var pauseExempt = map[protoreflect.Name]bool{"ping": true, "metrics": true}

// Message is the owner-facing sentence the platform shows.
func (p PauseState) Message() string {
	if p.Until.IsZero() {
		return "paused by the machine's owner until they resume it (opengeni-agent resume)"
	}
	return "paused by the machine's owner until " + p.Until.UTC().Format(time.RFC3339)
}

// refusal is the error every paused op answers. CONSENT_REQUIRED is the
// wire's "the owner said no": the control plane maps it to reason
// consent_required, never retries it and never reads it as an offline or
// missing machine (DRAINING would be retried for minutes, UNSUPPORTED would
// claim the feature does not exist). Detail reason=paused tells it apart
// from a missing screen-control consent.
func (p PauseState) refusal() *agentpb.AgentError {
	until := ""
	if !p.Until.IsZero() {
		until = p.Until.UTC().Format(time.RFC3339)
	}
	return &agentpb.AgentError{
		Code:    agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED,
		Message: p.Message(),
		Detail:  map[string]string{"reason": "paused", "paused_until": until},
	}
}

// pauseState reads the switch (never paused without Options.Pause). A
// change is noticed by whichever reader sees it first, an op or the
// watcher: it is recorded at once, so the log shows the pause before the
// first op it refused, and handed to the watcher to tell the platform.
func (a *Agent) pauseState() PauseState {
	if a.opts.Pause == nil {
		return PauseState{}
	}
	p := a.opts.Pause()
	a.pauseMu.Lock()
	changed := p != a.pauseSeen
	a.pauseSeen = p
	if changed {
		if o := a.opts.Observer; o != nil {
			o.ObservePause(p.Paused, p.Until)
		}
	}
	a.pauseMu.Unlock()
	if changed {
		select {
		case a.pauseChanged <- struct{}{}:
		default: // the watcher has a change pending; it reads the latest state
		}
	}
	return p
}

// watchPause reads the switch every PauseWatchInterval and acts on each
// change: it says Hello again (capabilities unavailable, with the reason)
// and, on pause, closes every terminal and the desktop stream with the reason.
func (a *Agent) watchPause(ctx context.Context) {
	if a.opts.Pause == nil {
		return
	}
	t := time.NewTicker(PauseWatchInterval)
	defer t.Stop()
	for {
		a.pauseState()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.pauseChanged:
			a.pauseMu.Lock()
			p := a.pauseSeen
			a.pauseMu.Unlock()
			a.onPauseChange(ctx, p)
		}
	}
}

func (a *Agent) onPauseChange(ctx context.Context, p PauseState) {
	if p.Paused {
		a.logger.Info("the machine's owner paused this machine; refusing every op but ping and metrics", "until", p.Until)
	} else {
		a.logger.Info("the machine's owner resumed this machine")
	}
	a.mu.Lock()
	nc := a.nc
	a.mu.Unlock()
	if nc != nil && nc.IsConnected() {
		if err := a.publishHello(nc); err != nil {
			a.logger.Warn("hello after a pause change failed", "err", err)
		}
	}
	if !p.Paused {
		return
	}
	why := p.Message()
	if a.ptys != nil {
		closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if n := a.ptys.CloseAll(closeCtx, why); n > 0 {
			a.logger.Info("closed terminals: paused by the owner", "terminals", n)
		}
		cancel()
	}
	if a.desktop.CloseStream(why) {
		a.logger.Info("closed the desktop stream: paused by the owner")
	}
}
