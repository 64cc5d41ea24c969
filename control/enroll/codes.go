package enroll

import (
	"crypto/rand"
	"encoding/base64"
	"regexp"
	"strings"
)

// userCodeAlphabet is the 32-symbol user-code alphabet (no I, O, 0, 1).
const userCodeAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// UserCodePattern is the shape of a user code.
var UserCodePattern = regexp.MustCompile(`^[A-Z2-9]{4}-[A-Z2-9]{4}$`)

// NewDeviceCode is 32 CSPRNG bytes, base64url without padding.
func NewDeviceCode() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics on failure)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewUserCode is 8 CSPRNG bytes, each mod 32 into the alphabet, as
// "XXXX-XXXX".
func NewUserCode() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	out := make([]byte, 0, 9)
	for i, c := range b {
		if i == 4 {
			out = append(out, '-')
		}
		out = append(out, userCodeAlphabet[c%32])
	}
	return string(out)
}

// normalizeUserCode forgives what people type: surrounding space, lower
// case, a missing dash.
func normalizeUserCode(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if len(s) == 8 && !strings.Contains(s, "-") {
		s = s[:4] + "-" + s[4:]
	}
	return s
}
