package agent

import (
	"github.com/opengeni/opengeni-agent/agent/exec"
	"github.com/opengeni/opengeni-agent/agent/fs"
	"github.com/opengeni/opengeni-agent/agent/git"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// register wires every capability this build serves into the dispatcher.
// Hello's capabilities are derived from what is registered here.
func (a *Agent) register() {
	d := a.dispatch
	Handle(d, "ping", Inline, a.ping)
	Handle(d, "metrics", Light, a.sampler.Metrics)

	ex := exec.New(exec.Options{
		Root:           a.root,
		DefaultTimeout: a.opts.ExecDefaultTimeout,
		MaxTimeout:     a.opts.ExecMaxTimeout,
		Logger:         a.logger.With("component", "exec"),
	})
	Handle(d, "exec", Heavy, ex.Exec)

	files := fs.New(a.root)
	Handle(d, "fs_read", Heavy, files.Read)
	Handle(d, "fs_write", Heavy, files.Write)
	// Writes to one path apply in arrival order, so uploads can pipeline chunks.
	OrderBy(d, "fs_write", func(r *agentpb.FsWriteRequest) string { return r.GetPath() })
	Handle(d, "fs_list", Heavy, files.List)
	Handle(d, "fs_mkdir", Heavy, files.Mkdir)
	Handle(d, "fs_move", Heavy, files.Move)
	Handle(d, "fs_stat", Heavy, files.Stat)
	Handle(d, "fs_remove", Heavy, files.Remove)

	g := git.New(git.Options{Root: a.root, Logger: a.logger.With("component", "git")})
	Handle(d, "git", Heavy, g.Git)
}
