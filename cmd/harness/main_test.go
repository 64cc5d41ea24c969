package main

import (
	"bytes"
	"strings"
	"testing"
)

// The argument handling that returns before anything is started.
func TestRunArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"no scenario", nil, 2, "usage: harness"},
		{"unknown scenario", []string{"nope"}, 2, `unknown scenario "nope"`},
		{"two scenarios", []string{"baseline", "soak"}, 2, "usage: harness"},
		{"bad flag", []string{"all", "--bogus"}, 2, "flag provided but not defined"},
		{"help", []string{"--help"}, 0, "scenarios: [baseline flood large long chaos-nats chaos-agent soak]"},
		{"nats subcommand needs a port", []string{"__nats-server", "x"}, 1, "invalid syntax"},
		{"fleet help", []string{"fleet", "--help"}, 0, "usage: harness fleet -n MACHINES"},
		{"fleet bad flag", []string{"fleet", "--bogus"}, 2, "flag provided but not defined"},
		{"fleet stray argument", []string{"fleet", "-n", "5", "extra"}, 2, "usage: harness fleet"},
		{"fleet of no machines", []string{"fleet", "-n", "0"}, 1, "the number of machines must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Errorf("exit %d, want %d (stderr %s)", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.out) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.out)
			}
		})
	}
}
