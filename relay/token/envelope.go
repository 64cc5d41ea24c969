package token

// Mint signs claims into prefix + payload + "." + signature: the shared HMAC
// envelope of control.md §7, for token kinds defined outside this package
// (the platform's "oge_" enrollment bearer and "oget_" enroll token). claims
// must marshal with its keys in schema order (a struct does).
func Mint(prefix, secret string, claims any) (string, error) {
	return mint(prefix, secret, claims)
}

// Verify checks the prefix, structure and signature of tok and decodes its
// payload into dst. Errors are ErrBadPrefix, ErrMalformed, ErrBadSignature or
// ErrBadClaims; the caller checks required fields and expiry (exp < now is
// expired, exp == now is still valid).
func Verify(prefix, secret, tok string, dst any) error {
	return verify(prefix, secret, tok, dst)
}
