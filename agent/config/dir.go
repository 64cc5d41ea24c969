// Package config is the agent's on-disk state: where the config directory is,
// one credentials file per connection (deployment + workspace), the durable
// install identity, and the machine owner's consent, read live.
//
// Layout under the config dir (agent.md §1.2, §9):
//
//	<dir>/connections/<id>.json   one owner-only (0600) file per connection
//	<dir>/locks/<id>.lock         the per-connection instance lock
//	<dir>/identity.key            the install's ed25519 key (0600, PKCS#8 PEM)
//	<dir>/credentials.json        the v1 single-connection file (migrated)
//	<dir>/pause.json              the owner's pause switch (read live)
//	<dir>/audit/audit*.jsonl      the owner's audit log (agent/audit; 0600, rotated)
package config

import (
	"errors"
	"os"
	"path/filepath"
)

// ErrNoConfigDir means neither $OPENGENI_CONFIG_DIR, $XDG_CONFIG_HOME, $HOME
// nor %USERPROFILE% is set.
var ErrNoConfigDir = errors.New("could not resolve a config directory: set $OPENGENI_CONFIG_DIR or $HOME")

// Dir resolves the config directory from the process environment.
func Dir() (string, error) { return DirFrom(os.Getenv) }

// DirFrom resolves the config directory with the given environment lookup,
// the same way on every OS: $OPENGENI_CONFIG_DIR verbatim; else
// $XDG_CONFIG_HOME/opengeni/agent; else <home>/.config/opengeni/agent where
// home is $HOME, else %USERPROFILE%.
func DirFrom(getenv func(string) string) (string, error) {
	if d := getenv("OPENGENI_CONFIG_DIR"); d != "" {
		return d, nil
	}
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "opengeni", "agent"), nil
	}
	home := getenv("HOME")
	if home == "" {
		home = getenv("USERPROFILE")
	}
	if home == "" {
		return "", ErrNoConfigDir
	}
	return filepath.Join(home, ".config", "opengeni", "agent"), nil
}
