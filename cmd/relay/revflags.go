package main

import (
	"flag"

	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/relay/revocation"
)

// Env var names of the relay's NATS connection (`relay serve`: revocations
// and replica routing). A CLI flag overrides its env var.
const (
	envNATSURL      = "OPENGENI_RELAY_NATS_URL"
	envNATSUser     = "OPENGENI_RELAY_NATS_USER"
	envNATSPassword = "OPENGENI_RELAY_NATS_PASSWORD"
	envNATSToken    = "OPENGENI_RELAY_NATS_TOKEN"
	envNATSCreds    = "OPENGENI_RELAY_NATS_CREDS"
	envBucket       = "OPENGENI_RELAY_ENROLLMENTS_BUCKET"
)

// applyRevocationEnv fills c from the environment (getenv is usually
// os.Getenv); unset variables leave a field alone.
func applyRevocationEnv(c *revocation.Config, getenv func(string) string) {
	for _, f := range []struct {
		name string
		dst  *string
	}{{envNATSURL, &c.URL}, {envNATSUser, &c.User}, {envNATSPassword, &c.Password},
		{envNATSToken, &c.Token}, {envNATSCreds, &c.Creds}, {envBucket, &c.Bucket}} {
		if v := getenv(f.name); v != "" {
			*f.dst = v
		}
	}
}

// registerRevocationFlags binds the flags to c (apply the env first: a flag
// wins).
func registerRevocationFlags(fs *flag.FlagSet, c *revocation.Config) {
	if c.Bucket == "" {
		c.Bucket = store.EnrollmentsBucket("")
	}
	fs.StringVar(&c.URL, "nats-url", c.URL, "platform NATS for revocations: agents of revoked enrollments are refused and their channels closed; empty turns revocation checking off (env "+envNATSURL+")")
	fs.StringVar(&c.User, "nats-user", c.User, "NATS user (env "+envNATSUser+")")
	fs.StringVar(&c.Password, "nats-password", c.Password, "NATS password; prefer the env var (env "+envNATSPassword+")")
	fs.StringVar(&c.Token, "nats-token", c.Token, "NATS token; prefer the env var (env "+envNATSToken+")")
	fs.StringVar(&c.Creds, "nats-creds", c.Creds, "NATS .creds file (env "+envNATSCreds+")")
	fs.StringVar(&c.Bucket, "enrollments-bucket", c.Bucket, "the platform's enrollments KV bucket (env "+envBucket+")")
}
