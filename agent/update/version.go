package update

import (
	"fmt"
	"strings"

	"golang.org/x/mod/semver"
)

// canonical turns "1.2.3" or "v1.2.3" into the "v1.2.3" form x/mod/semver
// compares, reporting whether it is valid semver.
func canonical(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	return v, semver.IsValid(v)
}

// VersionGate accepts candidate iff it is newer than current (or equal when
// allowSame) and not below minSupported. Any unparsable version fails the
// gate. The returned error wraps ErrVersionGate and says why.
func VersionGate(candidate, current, minSupported string, allowSame bool) error {
	c, ok1 := canonical(candidate)
	cur, ok2 := canonical(current)
	min, ok3 := canonical(minSupported)
	switch {
	case !ok1:
		return fmt.Errorf("%w: candidate version %q is not semver", ErrVersionGate, candidate)
	case !ok2:
		return fmt.Errorf("%w: current version %q is not semver", ErrVersionGate, current)
	case !ok3:
		return fmt.Errorf("%w: min_supported %q is not semver", ErrVersionGate, minSupported)
	}
	cmp := semver.Compare(c, cur)
	if cmp < 0 || (cmp == 0 && !allowSame) {
		return fmt.Errorf("%w: no newer build: %s is not newer than %s", ErrVersionGate, candidate, current)
	}
	if semver.Compare(c, min) < 0 {
		return fmt.Errorf("%w: %s is below min_supported %s", ErrVersionGate, candidate, minSupported)
	}
	return nil
}
