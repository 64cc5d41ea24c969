// Package subject names the NATS subjects of a machine, once, for the agent,
// the control library and the auth callout; and it holds the permission
// model that keeps one machine to itself (docs/security.md).
//
// v1 (control.md §2.1, §6.5):
//
//	agent.<ws>.<agent>.rpc      control → agent requests
//	agent.<ws>.<agent>.events   agent → control heartbeats, going-offline
//	agent.<ws>.<agent>.hello    agent → control announcements
//
// Next revision (control.md §9), one subtree per connection instance:
//
//	agent.<ws>.<agent>.connection.<inst>.{rpc,ack}          control → agent
//	agent.<ws>.<agent>.connection.<inst>.{events,hello,op.*} agent → control
package subject

import (
	"strings"
)

// Subject suffixes of a machine.
const (
	RPC    = "rpc"
	Events = "events"
	Hello  = "hello"
	Ack    = "ack"
	Op     = "op"
)

// AgentInboxRoot is the first token of every agent's private inbox prefix
// ([AgentInboxPrefix]). It is distinct from "_INBOX" (the reference
// TypeScript control plane's inbox) and from the Go control library's
// private prefix, so no grant that lets an agent read its own replies can
// ever match a reply meant for the control plane.
const AgentInboxRoot = "_INBOX_AGENT"

// Machine is "agent.<ws>.<agent>", the subject prefix of one machine.
func Machine(ws, agent string) string { return "agent." + ws + "." + agent }

// Of is "agent.<ws>.<agent>.<suffix>".
func Of(ws, agent, suffix string) string { return Machine(ws, agent) + "." + suffix }

// Connection is "agent.<ws>.<agent>.connection.<inst>", the subtree of one
// connection instance (next revision).
func Connection(ws, agent, inst string) string { return Machine(ws, agent) + ".connection." + inst }

// AgentInboxPrefix is where an agent receives replies to requests it makes
// itself: "_INBOX_AGENT.<ws>.<agent>" (nats.CustomInboxPrefix).
func AgentInboxPrefix(ws, agent string) string { return AgentInboxRoot + "." + ws + "." + agent }

// ValidToken reports whether s can stand as one subject token: non-empty,
// no separator, no wildcard, no whitespace or control characters. Every
// identity placed into a permission must pass, or one grant could name many
// machines ("*", ">", "a.b").
func ValidToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// Grant is the NATS permission set of one agent connection. Publish and
// Subscribe are allow lists; RespondOnce lets the agent publish one reply
// to the reply subject of each request delivered to it (nats-server's
// allow-responses), which is how it answers without a publish grant on
// anyone's inbox.
type Grant struct {
	Publish     []string
	Subscribe   []string
	RespondOnce bool
}

// AgentGrant is the grant of one machine's connection; inst is its
// connection instance (the uuid of a CONNECT name
// "opengeni-agent/connection/<uuid>"), or "" for a v1 connection.
//
// The invariants (tested in subject_test.go and, over a live server, by the
// attack suite in internal/devstack):
//   - every subject names this one machine: agent.<ws>.<agent>.… or its
//     private inbox; no wildcard in the workspace, agent or instance token;
//   - no agent may publish to anything any agent (itself included)
//     subscribes to. Together with RespondOnce this means an agent only ever
//     receives messages the control plane sent, with reply subjects the
//     control plane chose, so allow-responses cannot be turned into
//     "publish anywhere".
func AgentGrant(ws, agent, inst string) Grant {
	m := Machine(ws, agent)
	g := Grant{
		Publish:     []string{m + "." + Events, m + "." + Hello},
		Subscribe:   []string{m + "." + RPC, AgentInboxPrefix(ws, agent) + ".>"},
		RespondOnce: true,
	}
	if inst != "" {
		c := Connection(ws, agent, inst)
		g.Publish = append(g.Publish, c+"."+Events, c+"."+Hello, c+"."+Op+".>")
		g.Subscribe = append(g.Subscribe, c+"."+RPC, c+"."+Ack)
	}
	return g
}

// ConnectionNamePrefix is the CONNECT name prefix of a next-revision agent
// connection: "opengeni-agent/connection/<instanceId>".
const ConnectionNamePrefix = "opengeni-agent/connection/"

// InstanceFromName returns the connection instance of a CONNECT name, or ""
// when the name is not a connection name.
func InstanceFromName(name string) string {
	inst, ok := strings.CutPrefix(name, ConnectionNamePrefix)
	if !ok {
		return ""
	}
	return inst
}

// The control plane's NATS user needs only these (least privilege; the
// example server configuration in docs/security.md uses them too). It sends
// requests and op acks to machines, reads their events, hellos and op
// frames, keeps the registry in JetStream KV, and takes replies on a
// private inbox prefix ([ControlInbox]) or, for the reference TypeScript
// control plane, on "_INBOX" (which no agent can read).
var (
	ControlPublish = []string{
		"agent.*.*." + RPC, "agent.*.*.connection.*." + RPC, "agent.*.*.connection.*." + Ack,
		"$JS.API.>", "$KV.>", "$JS.ACK.>", "$JS.FC.>",
	}
	ControlSubscribe = []string{
		ControlInbox + ".>", "_INBOX.>",
		"agent.*.*." + Events, "agent.*.*." + Hello,
		"agent.*.*.connection.*." + Events, "agent.*.*.connection.*." + Hello, "agent.*.*.connection.*." + Op + ".>",
	}
)

// ControlInbox is the Go control library's private inbox prefix (agents can
// never read it; the reference TypeScript control plane uses "_INBOX").
const ControlInbox = "_OGCTL"

// CalloutRequest is the subject nats-server sends authorization requests
// to; the callout user subscribes to it and publishes nothing but replies.
const CalloutRequest = "$SYS.REQ.USER.AUTH"
