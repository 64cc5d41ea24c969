// Package envmerge is the one implementation of building a child's
// environment: a base list ("KEY=value" entries, as os.Environ returns)
// with entries set over it, where a set key replaces every entry of the same
// name. Names compare the way the OS compares them: exactly on unix,
// case-insensitively on Windows (Path and PATH are one variable), as
// os/exec does.
package envmerge

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
)

// ErrInvalid is wrapped by the error for a variable no process can be given:
// an empty name, a name with '=' or NUL, or a value with NUL.
var ErrInvalid = errors.New("invalid environment variable")

// Check reports whether key=value can be passed to a process.
func Check(key, value string) error {
	if key == "" || strings.ContainsAny(key, "=\x00") || strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("%w: name or value of %q", ErrInvalid, key)
	}
	return nil
}

// Keys is how an OS compares variable names.
type Keys struct{ foldCase bool }

// For is the rule of goos (a runtime.GOOS value): Windows folds case.
func For(goos string) Keys { return Keys{foldCase: goos == "windows"} }

// Host is this machine's rule.
var Host = For(runtime.GOOS)

// Equal reports whether a and b name the same variable.
func (k Keys) Equal(a, b string) bool {
	if k.foldCase {
		return strings.EqualFold(a, b)
	}
	return a == b
}

// fold is the map key of a name: equal names fold to the same string.
func (k Keys) fold(name string) string {
	if k.foldCase {
		return strings.ToUpper(name)
	}
	return name
}

// Lookup is key's value in env; the last entry wins, as in os/exec.
func (k Keys) Lookup(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if name, v, ok := strings.Cut(env[i], "="); ok && k.Equal(name, key) {
			return v, true
		}
	}
	return "", false
}

// Set is env with key=value replacing every entry named key.
func (k Keys) Set(env []string, key, value string) []string {
	return k.apply(env, []string{key}, map[string]string{key: value})
}

// Merge is base with over's entries replacing base's of the same name. An
// invalid entry in over (see Check) fails the whole merge. Entries of over
// whose names are equal under k (Path, PATH on Windows) apply in sorted
// order, so the result does not depend on map order.
func (k Keys) Merge(base []string, over map[string]string) ([]string, error) {
	keys := make([]string, 0, len(over))
	for key, v := range over {
		if err := Check(key, v); err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return k.apply(base, keys, over), nil
}

// apply builds the merged list in one pass: a duplicate name keeps the
// first entry's place and the last entry's text. Base entries without a
// name (Windows' per-drive "=C:=C:\dir") are kept as they are.
func (k Keys) apply(base, keys []string, over map[string]string) []string {
	out := make([]string, 0, len(base)+len(keys))
	at := make(map[string]int, len(base)+len(keys))
	put := func(name, entry string) {
		f := k.fold(name)
		if i, ok := at[f]; ok {
			out[i] = entry
			return
		}
		at[f] = len(out)
		out = append(out, entry)
	}
	for _, e := range base {
		if name, _, ok := strings.Cut(e, "="); ok && name != "" {
			put(name, e)
		} else {
			out = append(out, e)
		}
	}
	for _, key := range keys {
		put(key, key+"="+over[key])
	}
	return out
}

// Lookup is Host.Lookup.
func Lookup(env []string, key string) (string, bool) { return Host.Lookup(env, key) }

// Set is Host.Set.
func Set(env []string, key, value string) []string { return Host.Set(env, key, value) }

// Merge is Host.Merge.
func Merge(base []string, over map[string]string) ([]string, error) { return Host.Merge(base, over) }
