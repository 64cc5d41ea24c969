package main

import (
	"flag"
	"testing"

	"github.com/opengeni/opengeni-agent/relay/revocation"
)

// The revocation connection's env vars and flags: a flag wins over its env
// var, the bucket defaults to the platform's enrollments bucket.
func TestRevocationFlagsAndEnv(t *testing.T) {
	var c revocation.Config
	applyRevocationEnv(&c, func(k string) string {
		return map[string]string{envNATSURL: "nats://env:4222", envNATSUser: "relay", envNATSPassword: "pw"}[k]
	})
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	registerRevocationFlags(fs, &c)
	if err := fs.Parse([]string{"-nats-url", "nats://flag:4222"}); err != nil {
		t.Fatal(err)
	}
	if !c.Enabled() || c.URL != "nats://flag:4222" || c.User != "relay" || c.Password != "pw" || c.Bucket != "opengeni_enrollments" {
		t.Fatalf("%+v", c)
	}
}
