package enrollwire

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// The answers of control.md §6.2/§6.3 as the control plane sends them
// decode into the one set of types, with agent.md §2.3's defaults.
func TestDecodeFixtures(t *testing.T) {
	creds := &Credentials{
		AgentID: "44444444-4444-4444-8444-444444444444", WorkspaceID: "11111111-1111-4111-8111-111111111111",
		Bearer: "oge_payload.sig", SubjectPrefix: "agent.11111111-1111-4111-8111-111111111111.44444444-4444-4444-8444-444444444444",
		NATSURLs: []string{"nats://nats.example:4222"}, RelayURL: "wss://relay.example/stream", RelayToken: "ogr_payload.sig",
		NATSAccountCreds: "oge_payload.sig", UpdatePublicKey: "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3",
		ConsentedWholeMachine: true,
	}
	tests := []struct {
		file string
		into any
		want any
	}{
		{"start-response.json", &StartResponse{}, &StartResponse{DeviceCode: "Hk3q9bV2sPzN0wXcY7mA1rT5uE8iO4lK6jG2hF0dS9a",
			UserCode: "WDJB-MJHT", VerificationURI: "https://api.example/device",
			VerificationURIComplete: "https://api.example/device?user_code=WDJB-MJHT", IntervalSeconds: 5, ExpiresInSeconds: 600}},
		{"start-response-minimal.json", &StartResponse{}, &StartResponse{DeviceCode: "dc-1", UserCode: "WDJB-MJHT",
			VerificationURI: "https://api.example/device", IntervalSeconds: DefaultIntervalSeconds}},
		{"poll-pending.json", &PollResponse{}, &PollResponse{State: StatePending}},
		{"poll-authorized.json", &PollResponse{}, &PollResponse{State: StateAuthorized, Credentials: creds}},
		{"exchange-response.json", &ExchangeResponse{}, &ExchangeResponse{Credentials: &Credentials{
			AgentID: creds.AgentID, WorkspaceID: creds.WorkspaceID, Bearer: creds.Bearer, SubjectPrefix: creds.SubjectPrefix,
			NATSURLs: []string{}, NATSAccountCreds: creds.Bearer, ConsentedWholeMachine: true, ConsentedScreenControl: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			if err := json.Unmarshal(fixture(t, tt.file), tt.into); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tt.into, tt.want) {
				t.Fatalf("decoded %+v\nwant    %+v", tt.into, tt.want)
			}
		})
	}
}

// The agent's requests encode exactly as agent.md §2.3/§2.4 lists: camelCase,
// machineName omitted when empty, no workspaceId in an exchange.
func TestEncodeRequestsMatchFixtures(t *testing.T) {
	tests := []struct {
		file string
		req  any
	}{
		{"start-request.json", StartRequest{WorkspaceID: "11111111-1111-4111-8111-111111111111",
			PublicKey: "MCowBQYDK2VwAyEAbase64nopadding0123456789ab", OS: "linux", Arch: "x86_64", MachineName: "laptop", CanOfferDisplay: true}},
		{"exchange-request.json", ExchangeRequest{Token: "oget_payload.sig",
			PublicKey: "MCowBQYDK2VwAyEAbase64nopadding0123456789ab", OS: "macos", Arch: "aarch64"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := json.Marshal(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if want := fixture(t, tt.file); !bytes.Equal(got, want) {
				t.Fatalf("encoded %s\nwant    %s", got, want)
			}
		})
	}
}

// What the server encodes, the agent decodes back unchanged; malformed
// answers are clear errors, not zero values.
func TestServerAnswersRoundTripAndBadAnswersFail(t *testing.T) {
	start := StartResponse{DeviceCode: "d", UserCode: "U", VerificationURI: "https://x/device", IntervalSeconds: 7, ExpiresInSeconds: 600}
	b, err := json.Marshal(start)
	if err != nil {
		t.Fatal(err)
	}
	var back StartResponse
	if err := json.Unmarshal(b, &back); err != nil || back != start {
		t.Fatalf("round trip = %+v, %v; want %+v", back, err, start)
	}
	bad := []struct{ name, body, want string }{
		{"unknown state", `{"state":"maybe"}`, `unknown device-flow state "maybe"`},
		{"negative interval", `{"userCode":"U","deviceCode":"d","verificationUri":"u","intervalSeconds":-1}`, "cannot unmarshal"},
		{"no user code", `{"deviceCode":"d","verificationUri":"u"}`, "missing field `userCode`"},
		{"no verification uri", `{"userCode":"U","deviceCode":"d"}`, "missing field `verificationUri`"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			var into any = &StartResponse{}
			if strings.Contains(tt.body, "state") {
				into = &PollResponse{}
			}
			err := json.Unmarshal([]byte(tt.body), into)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
