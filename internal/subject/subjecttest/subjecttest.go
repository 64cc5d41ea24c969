// Package subjecttest checks issued NATS grants against the isolation
// invariants of docs/security.md. Tests only: it links nats-server's subject
// matcher, which no binary should carry.
package subjecttest

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/opengeni/opengeni-agent/internal/subject"
)

// Holder is one issued grant and the machine it was issued to.
type Holder struct {
	Workspace, Agent, Instance string
	Grant                      subject.Grant
}

// Reserved are subject spaces no agent may publish to or subscribe to: the
// JetStream API and KV store, the system account, the reference control
// plane's inbox and the Go control library's private inbox ("_OGCTL").
var Reserved = []string{"$JS.>", "$KV.>", "$SYS.>", "$O.>", "_INBOX.>", "_OGCTL.>", "_R_.>"}

// ControlOnly are subjects only the control plane may publish to: every
// machine's requests and op acks.
var ControlOnly = []string{"agent.*.*.rpc", "agent.*.*.connection.*.rpc", "agent.*.*.connection.*.ack"}

// Violations lists every broken invariant:
//   - each subject names its holder's machine (agent.<ws>.<agent>.… or
//     _INBOX_AGENT.<ws>.<agent>.…), with literal workspace, agent and
//     instance tokens;
//   - no holder's publish subject collides with any holder's subscribe
//     subject (its own included): no agent can deliver a message, and with
//     it a reply subject of its choosing, to an agent;
//   - no agent touches the reserved spaces, and none may publish where
//     only the control plane publishes;
//   - answers go through allow-responses only.
func Violations(holders []Holder) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, h := range holders {
		own := []string{subject.Machine(h.Workspace, h.Agent) + ".", subject.AgentInboxPrefix(h.Workspace, h.Agent) + "."}
		all := append(append([]string{}, h.Grant.Publish...), h.Grant.Subscribe...)
		if len(h.Grant.Publish) == 0 || len(h.Grant.Subscribe) == 0 {
			bad("%s/%s: an empty allow list means no restriction to nats-server", h.Workspace, h.Agent)
		}
		for _, s := range all {
			if !strings.HasPrefix(s, own[0]) && !strings.HasPrefix(s, own[1]) {
				bad("%s/%s: %q names another machine or a shared space", h.Workspace, h.Agent, s)
			}
			toks := strings.Split(s, ".")
			fixed := 3 // agent.<ws>.<agent> / _INBOX_AGENT.<ws>.<agent>
			if len(toks) > 4 && toks[3] == "connection" {
				fixed = 5
			}
			for i := 1; i < fixed && i < len(toks); i++ {
				if toks[i] == "*" || toks[i] == ">" || toks[i] == "" {
					bad("%s/%s: %q has a wildcard in an identity token", h.Workspace, h.Agent, s)
				}
			}
			for _, r := range Reserved {
				if server.SubjectsCollide(s, r) {
					bad("%s/%s: %q reaches reserved %q", h.Workspace, h.Agent, s, r)
				}
			}
		}
		for _, p := range h.Grant.Publish {
			for _, c := range ControlOnly {
				if server.SubjectsCollide(p, c) {
					bad("%s/%s: may publish %q where only the control plane publishes (%q)", h.Workspace, h.Agent, p, c)
				}
			}
			for _, o := range holders {
				for _, s := range o.Grant.Subscribe {
					if server.SubjectsCollide(p, s) {
						bad("%s/%s may publish %q, which %s/%s subscribes as %q", h.Workspace, h.Agent, p, o.Workspace, o.Agent, s)
					}
				}
			}
		}
		if !h.Grant.RespondOnce {
			bad("%s/%s: no allow-responses: the agent cannot answer", h.Workspace, h.Agent)
		}
	}
	return out
}
