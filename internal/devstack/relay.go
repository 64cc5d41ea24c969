package devstack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Files in the platform's data directory that `relay ctl shell` reads.
const (
	SecretFileName   = "viewer.secret"
	RelayURLFileName = "relay.url"
)

// Dir is where a running dev stack with the default data directory leaves
// its relay URL and viewer secret for `relay ctl`.
func Dir() (string, error) { return PlatformDataDir() }

// writeDevFiles writes the viewer secret and the relay URL into dir (the
// platform's data directory), each 0600 in a 0700 directory, replacing
// (never following) what was there.
func writeDevFiles(dir, relayURL string, secret []byte) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		if err == nil {
			err = fmt.Errorf("%s is not a private directory", dir)
		}
		return nil, err
	}
	var files []string
	for _, f := range []struct {
		name string
		data []byte
	}{{SecretFileName, secret}, {RelayURLFileName, []byte(relayURL)}} {
		p := filepath.Join(dir, f.name)
		os.Remove(p)
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return files, err
		}
		_, err = fh.Write(append(f.data, '\n'))
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return files, err
		}
		files = append(files, p)
	}
	return files, nil
}

// ReadDevFiles returns the relay URL and viewer secret a running `relay dev`
// left in its data directory dir ("" = the default, Dir()).
func ReadDevFiles(dir string) (relayURL string, secret []byte, err error) {
	if dir == "" {
		if dir, err = Dir(); err != nil {
			return "", nil, err
		}
	}
	sb, err := os.ReadFile(filepath.Join(dir, SecretFileName))
	if err != nil {
		return "", nil, err
	}
	ub, err := os.ReadFile(filepath.Join(dir, RelayURLFileName))
	if err != nil {
		return "", nil, err
	}
	secret = []byte(strings.TrimSpace(string(sb)))
	if len(secret) == 0 {
		return "", nil, errors.New("devstack: empty viewer secret file")
	}
	return strings.TrimSpace(string(ub)), secret, nil
}
