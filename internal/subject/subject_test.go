package subject_test

import (
	"testing"

	"github.com/opengeni/opengeni-agent/internal/subject"
	"github.com/opengeni/opengeni-agent/internal/subject/subjecttest"
)

const (
	wsA = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	wsB = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
)

func TestAgentGrantIsolation(t *testing.T) {
	var hs []subjecttest.Holder
	for _, id := range []struct{ ws, agent, inst string }{
		{wsA, "a1", ""}, {wsA, "a2", ""}, {wsB, "b1", ""},
		{wsA, "a1", "11111111-1111-4111-8111-111111111111"}, {wsB, "b1", "22222222-2222-4222-8222-222222222222"},
	} {
		hs = append(hs, subjecttest.Holder{Workspace: id.ws, Agent: id.agent, Instance: id.inst, Grant: subject.AgentGrant(id.ws, id.agent, id.inst)})
	}
	for _, v := range subjecttest.Violations(hs) {
		t.Error(v)
	}
}

// The checker itself must catch what the reference grants and the earlier
// ones allowed, or a passing isolation test proves nothing.
func TestViolationsCatchesUnsafeGrants(t *testing.T) {
	cases := []struct {
		name  string
		grant subject.Grant
	}{
		{"reference grant", subject.Grant{Publish: []string{"agent." + wsA + ".>", "_INBOX.>"}, Subscribe: []string{"agent." + wsA + ".>", "_INBOX.>"}, RespondOnce: true}},
		{"publish own rpc", subject.Grant{Publish: []string{"agent." + wsA + ".a1.rpc"}, Subscribe: []string{"agent." + wsA + ".a1.rpc"}, RespondOnce: true}},
		{"workspace wildcard", subject.Grant{Publish: []string{"agent." + wsA + ".a1.events"}, Subscribe: []string{"agent." + wsA + ".*.rpc"}, RespondOnce: true}},
		{"jetstream", subject.Grant{Publish: []string{"agent." + wsA + ".a1.events", "$JS.API.>"}, Subscribe: []string{"agent." + wsA + ".a1.rpc"}, RespondOnce: true}},
		{"own inbox publish", subject.Grant{Publish: []string{subject.AgentInboxPrefix(wsA, "a1") + ".x"}, Subscribe: []string{subject.AgentInboxPrefix(wsA, "a1") + ".>"}, RespondOnce: true}},
		{"empty publish list", subject.Grant{Subscribe: []string{"agent." + wsA + ".a1.rpc"}, RespondOnce: true}},
		{"no responses", subject.Grant{Publish: []string{"agent." + wsA + ".a1.events"}, Subscribe: []string{"agent." + wsA + ".a1.rpc"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if v := subjecttest.Violations([]subjecttest.Holder{{Workspace: wsA, Agent: "a1", Grant: c.grant}}); len(v) == 0 {
				t.Fatal("no violation reported")
			}
		})
	}
}

func TestValidToken(t *testing.T) {
	for s, want := range map[string]bool{
		wsA: true, "agent-1": true, "": false, "*": false, ">": false, "a.b": false, "a b": false, "a\x00": false, "a\tb": false,
	} {
		if got := subject.ValidToken(s); got != want {
			t.Errorf("ValidToken(%q) = %v", s, got)
		}
	}
}

func TestInstanceFromName(t *testing.T) {
	if got := subject.InstanceFromName("opengeni-agent/connection/abc"); got != "abc" {
		t.Fatal(got)
	}
	if got := subject.InstanceFromName("opengeni-agent/a1"); got != "" {
		t.Fatal(got)
	}
}
