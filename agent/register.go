package agent

import (
	"context"
	"time"

	"github.com/opengeni/opengeni-agent/agent/desktop"
	"github.com/opengeni/opengeni-agent/agent/exec"
	"github.com/opengeni/opengeni-agent/agent/fs"
	"github.com/opengeni/opengeni-agent/agent/git"
	"github.com/opengeni/opengeni-agent/agent/opstream"
	"github.com/opengeni/opengeni-agent/agent/pty"
	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// register wires every capability this build serves into the dispatcher.
// Hello's capabilities are derived from what is registered here. exec, git,
// pty and stream tag their logs with their own component; desktop does not.
func (a *Agent) register() {
	d := a.dispatch
	Handle(d, "ping", Inline, a.ping)
	Handle(d, "metrics", Light, a.sampler.Metrics)

	ex := exec.New(exec.Options{
		Root:           a.root,
		DefaultTimeout: a.opts.ExecDefaultTimeout,
		MaxTimeout:     a.opts.ExecMaxTimeout,
		Logger:         a.logger,
	})
	Handle(d, "exec", Heavy, ex.Exec)

	files := fs.New(a.root)
	// Op-stream v1.1 (agent.md §9): exec, fs_read and chunked fs_write as
	// detachable ops whose frames ride the bulk connection.
	if !a.opts.NoOpStream {
		a.ops = opstream.New(opstream.Options{Exec: ex, Files: files, Publish: a.publishFrame,
			Subject: func(id string) string { return a.ConnectionSubject(subject.Op + "." + id) }, Logger: a.logger,
			OnEnd: opEndObserver(a.opts.Observer)})
		Handle(d, "op_start", Heavy, a.ops.Start)
		HandleAs(d, "op_cancel", "op_status", Light, a.ops.Cancel)
		HandleAs(d, "op_query", "op_status", Light, a.ops.Query)
		HandleAs(d, "op_attach", "op_status", Light, a.ops.Attach)
		Handle(d, "write_chunk", Heavy, a.ops.WriteChunk)
	}

	Handle(d, "fs_read", Heavy, files.Read)
	Handle(d, "fs_write", Heavy, files.Write)
	// Writes to one path apply in arrival order, so uploads can pipeline chunks.
	OrderBy(d, "fs_write", func(r *agentpb.FsWriteRequest) string { return r.GetPath() })
	Handle(d, "fs_list", Heavy, files.List)
	Handle(d, "fs_mkdir", Heavy, files.Mkdir)
	Handle(d, "fs_move", Heavy, files.Move)
	Handle(d, "fs_stat", Heavy, files.Stat)
	Handle(d, "fs_remove", Heavy, files.Remove)

	g := git.New(git.Options{Root: a.root, Logger: a.logger})
	Handle(d, "git", Heavy, g.Git)

	// Terminals and the desktop stream through the relay; without one the
	// terminals are not served (and Hello reports pty=false).
	var streams *stream.Dialer
	if a.opts.RelayURL != "" {
		streams = a.streamDialer()
		a.ptys = pty.New(pty.Options{
			Streams:     streams,
			Root:        a.root,
			Logger:      a.logger,
			IdleTimeout: a.opts.PtyIdleTimeout,
			MaxLive:     a.opts.MaxPtys,
		})
		Handle(d, "pty_open", Heavy, a.ptys.Open)
		Handle(d, "pty_write", Light, a.ptys.Write)
		Handle(d, "pty_resize", Light, a.ptys.Resize)
		Handle(d, "pty_close", Light, a.ptys.Close)
	}

	// The desktop: screenshots are a view op; input is refused unless the
	// owner consents to screen control, read live on every event.
	dopts := desktop.Options{
		Display:             a.opts.Display,
		Consent:             func() bool { return a.opts.Consent().ScreenControl && !a.pauseState().Paused },
		AllowVirtualDisplay: a.opts.VirtualDesktop,
		Logger:              a.logger.With("component", "desktop"),
	}
	if streams != nil {
		dopts.Registrar = desktop.StreamRegistrar(streams)
	}
	a.desktop = desktop.New(dopts)
	Handle(d, "desktop_screenshot", Heavy, a.desktop.Screenshot)
	Handle(d, "desktop_input", Heavy, a.desktop.Input)
	Handle(d, "desktop_ensure", Heavy, a.desktop.Ensure)

	// Fleet update: answered at once (never waits for a slot), the update
	// itself runs in the background and reports AgentUpdateProgress events.
	if a.opts.SelfUpdate != nil {
		Handle(d, "agent_update_apply", Light, a.agentUpdateApply)
	}
}

func (a *Agent) agentUpdateApply(_ context.Context, req *agentpb.AgentUpdateApplyRequest) (*agentpb.AgentUpdateApplyResponse, error) {
	return a.opts.SelfUpdate.apply(updateRequest{req: req, agentID: a.opts.AgentID, channel: a.opts.UpdateChannel,
		publish: a.publishUpdateProgress})
}

// publishUpdateProgress sends one AgentUpdateProgress on this connection's
// events subjects (v1 and instance) and flushes, so RESTARTING is out
// before the process stops.
func (a *Agent) publishUpdateProgress(p *agentpb.AgentUpdateProgress) {
	a.mu.Lock()
	nc := a.nc
	a.mu.Unlock()
	if nc == nil {
		return
	}
	ev := &agentpb.AgentEvent{AgentId: a.opts.AgentID, Event: &agentpb.AgentEvent_AgentUpdateProgress{AgentUpdateProgress: p}}
	if err := a.publishEvent(nc, ev); err != nil {
		a.logger.Warn("update progress not published", "stage", p.GetStage().String(), "err", err)
		return
	}
	_ = nc.FlushTimeout(2 * time.Second)
}

// streamDialer dials the relay for this machine's channels.
func (a *Agent) streamDialer() *stream.Dialer {
	return &stream.Dialer{
		RelayURL:    a.opts.RelayURL,
		Token:       a.opts.RelayToken,
		WorkspaceID: a.opts.WorkspaceID,
		AgentID:     a.opts.AgentID,
		Logger:      a.logger,
	}
}
