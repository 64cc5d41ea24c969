package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"aead.dev/minisign"
)

// ParsePublicKey reads minisign public-key text: either the bare base64
// line or a .pub file (the last non-empty line not starting with
// "untrusted comment:" is the key).
func ParsePublicKey(text string) (minisign.PublicKey, error) {
	var line string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "untrusted comment:") {
			continue
		}
		line = l
	}
	var pk minisign.PublicKey
	if err := pk.UnmarshalText([]byte(line)); err != nil {
		return pk, fmt.Errorf("%w: bad public key: %v", ErrSignature, err)
	}
	return pk, nil
}

// VerifySignature checks a detached minisign signature (the full .minisig
// text, trusted comment and global signature included) over msg. Only the
// prehashed "ED" (BLAKE2b-512) algorithm is accepted, as in agent.md §7.
func VerifySignature(pub minisign.PublicKey, msg, sig []byte) error {
	var s minisign.Signature
	if err := s.UnmarshalText(bytes.TrimSpace(sig)); err != nil {
		return fmt.Errorf("%w: unreadable signature: %v", ErrSignature, err)
	}
	if s.Algorithm != minisign.HashEdDSA {
		return fmt.Errorf("%w: only prehashed (ED) signatures are accepted", ErrSignature)
	}
	if s.KeyID != pub.ID() {
		return fmt.Errorf("%w: signed by key %016X, expected %016X", ErrSignature, s.KeyID, pub.ID())
	}
	if !verifyHashed(pub, msg, sig) {
		return fmt.Errorf("%w: signature does not match", ErrSignature)
	}
	return nil
}

// verifyHashed runs minisign's prehashed verification over msg.
func verifyHashed(pub minisign.PublicKey, msg, sig []byte) bool {
	r := minisign.NewReader(bytes.NewReader(msg))
	_, _ = io.Copy(io.Discard, r) // reading feeds the hash; a bytes.Reader cannot fail
	return r.Verify(pub, sig)
}

// VerifySHA256 compares the sha256 of data with a hex digest (any case).
func VerifySHA256(data []byte, want string) error {
	sum := sha256.Sum256(data)
	got := hex.EncodeToString(sum[:])
	if !strings.EqualFold(strings.TrimSpace(want), got) {
		return fmt.Errorf("%w: sha256 mismatch: expected %s, got %s", ErrChecksum, want, got)
	}
	return nil
}
