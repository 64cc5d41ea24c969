package platform

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nkeys"
)

// Secrets are what the platform signs and authenticates with. The NATS
// passwords and the callout issuer must match the server configuration
// ([AccountsConfig]); every platform process of one deployment shares them.
// The JSON names are those of `relay dev`'s platform.json.
type Secrets struct {
	SigningSecret     string `json:"signingSecret"`     // oge_ bearers, oget_ enroll tokens
	RelayTokenSecret  string `json:"relayTokenSecret"`  // ogr_ agent relay tokens
	StreamTokenSecret string `json:"streamTokenSecret"` // ogs_ viewer stream tokens
	CalloutSeed       string `json:"calloutSeed"`       // SA… account seed: the callout issuer
	ControlPassword   string `json:"controlPassword"`   // NATS user "control"
	CalloutPassword   string `json:"calloutPassword"`   // NATS user "auth"
	RelayNATSPassword string `json:"relayNatsPassword"` // NATS user "relay" (revocation watch)
	SysPassword       string `json:"sysPassword"`       // NATS user "kick" (system account: kicks revoked clients)
	AdminToken        string `json:"adminToken"`        // the enrollment API's admin bearer
}

// secretField names one secret: its env var (production) and where it lives.
type secretField struct {
	env string
	v   func(*Secrets) *string
	gen func() (string, error)
}

// Env var names of the secrets (read by `relay platform`; the NATS ones are
// also what the shipped nats-server configuration references).
const (
	EnvSigningSecret     = "OPENGENI_SIGNING_SECRET"
	EnvRelayTokenSecret  = "OPENGENI_RELAY_TOKEN_SECRET"
	EnvStreamTokenSecret = "OPENGENI_STREAM_TOKEN_SECRET"
	EnvCalloutSeed       = "OPENGENI_CALLOUT_SEED"
	EnvControlPassword   = "OPENGENI_NATS_CONTROL_PASSWORD"
	EnvCalloutPassword   = "OPENGENI_NATS_CALLOUT_PASSWORD"
	EnvRelayNATSPassword = "OPENGENI_NATS_RELAY_PASSWORD"
	EnvSysPassword       = "OPENGENI_NATS_KICK_PASSWORD"
	EnvAdminToken        = "OPENGENI_ADMIN_TOKEN"
	// EnvCalloutIssuer is the callout seed's public key (A…): the servers
	// need it, not the seed. [Secrets.Env] writes it.
	EnvCalloutIssuer = "OPENGENI_CALLOUT_ISSUER"
)

func hexSecret(n int) func() (string, error) {
	return func() (string, error) {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		return hex.EncodeToString(b), nil
	}
}

// prefixed puts a prefix before a generated secret (a NATS password must
// start with a letter: nats-server reads "123…" from the environment as a
// number).
func prefixed(prefix string, gen func() (string, error)) func() (string, error) {
	return func() (string, error) {
		s, err := gen()
		return prefix + s, err
	}
}

func accountSeed() (string, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return "", err
	}
	s, err := kp.Seed()
	return string(s), err
}

var secretFields = []secretField{
	{EnvSigningSecret, func(s *Secrets) *string { return &s.SigningSecret }, hexSecret(32)},
	{EnvRelayTokenSecret, func(s *Secrets) *string { return &s.RelayTokenSecret }, hexSecret(32)},
	{EnvStreamTokenSecret, func(s *Secrets) *string { return &s.StreamTokenSecret }, hexSecret(32)},
	{EnvCalloutSeed, func(s *Secrets) *string { return &s.CalloutSeed }, accountSeed},
	{EnvControlPassword, func(s *Secrets) *string { return &s.ControlPassword }, prefixed("ognats_", hexSecret(24))},
	{EnvCalloutPassword, func(s *Secrets) *string { return &s.CalloutPassword }, prefixed("ognats_", hexSecret(24))},
	{EnvRelayNATSPassword, func(s *Secrets) *string { return &s.RelayNATSPassword }, prefixed("ognats_", hexSecret(24))},
	{EnvSysPassword, func(s *Secrets) *string { return &s.SysPassword }, prefixed("ognats_", hexSecret(24))},
	{EnvAdminToken, func(s *Secrets) *string { return &s.AdminToken }, prefixed("ogadm_", hexSecret(24))},
}

// Fill generates every empty secret; it reports which it made (their env
// names), so a caller persisting the secrets knows to write them.
func (s *Secrets) Fill() (made []string, err error) {
	for _, f := range secretFields {
		if v := f.v(s); *v == "" {
			if *v, err = f.gen(); err != nil {
				return made, fmt.Errorf("platform: generate %s: %w", f.env, err)
			}
			made = append(made, f.env)
		}
	}
	return made, nil
}

// SecretsFromEnv reads the secrets from their env vars (getenv is
// os.Getenv); [Secrets.Validate] says what is missing.
func SecretsFromEnv(getenv func(string) string) Secrets {
	var s Secrets
	for _, f := range secretFields {
		*f.v(&s) = strings.TrimSpace(getenv(f.env))
	}
	return s
}

// Errors of [Secrets.Validate].
var (
	// ErrMissingSecret: a secret the platform needs is empty.
	ErrMissingSecret = errors.New("platform: missing secret")
	// ErrBadSecret: a secret has the wrong form.
	ErrBadSecret = errors.New("platform: bad secret")
)

// Validate checks that every secret is set and the callout seed is an
// account seed.
func (s *Secrets) Validate() error {
	var missing []string
	for _, f := range secretFields {
		if *f.v(s) == "" {
			missing = append(missing, f.env)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s (generate a set with `relay platform secrets`)", ErrMissingSecret, strings.Join(missing, ", "))
	}
	_, err := s.CalloutIssuer()
	return err
}

// CalloutIssuer is the public account key of CalloutSeed: the servers'
// auth_callout issuer.
func (s *Secrets) CalloutIssuer() (string, error) {
	kp, err := nkeys.FromSeed([]byte(s.CalloutSeed))
	if err != nil {
		return "", fmt.Errorf("platform: callout seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("platform: callout seed: %w", err)
	}
	if !nkeys.IsValidPublicAccountKey(pub) {
		return "", fmt.Errorf("%w: the callout seed is not an account seed (SA…)", ErrBadSecret)
	}
	return pub, nil
}

// Env renders the secrets as an env file (KEY=value lines), the callout
// issuer included: for `relay platform` and the nats-servers.
func (s *Secrets) Env() (string, error) {
	pub, err := s.CalloutIssuer()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, f := range secretFields {
		fmt.Fprintf(&b, "%s=%s\n", f.env, *f.v(s))
	}
	fmt.Fprintf(&b, "%s=%s\n", EnvCalloutIssuer, pub)
	return b.String(), nil
}
