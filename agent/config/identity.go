package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const identityFile = "identity.key"

// Identity is the install's durable ed25519 key. Its public half is the
// enrollment's publicKey: the control plane upserts enrollments on
// (workspace, publicKey), so re-enrolling (even with --force) re-activates
// the same machine instead of minting a new one.
type Identity struct {
	priv ed25519.PrivateKey
}

// GenerateIdentity makes a fresh key from the OS CSPRNG.
func GenerateIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate install identity: %w", err)
	}
	return &Identity{priv: priv}, nil
}

// IdentityPath is <dir>/identity.key.
func (s *Store) IdentityPath() string { return filepath.Join(s.dir, identityFile) }

// Identity loads the install identity, creating and persisting it (PKCS#8
// PEM, mode 0600) on first use. An unreadable key is an error, not silently
// replaced: a new key would enroll as a different machine.
func (s *Store) Identity() (*Identity, error) {
	path := s.IdentityPath()
	data, err := os.ReadFile(path)
	if err == nil {
		id, perr := parseIdentity(data)
		if perr != nil {
			return nil, fmt.Errorf("install identity at %s is unreadable (%v); delete it to create a new one (the machine then enrolls as new)", path, perr)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read install identity: %w", err)
	}
	id, err := GenerateIdentity()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(id.priv)
	if err != nil {
		return nil, err
	}
	if err := ensurePrivateDir(s.dir); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return nil, fmt.Errorf("persist install identity: %w", err)
	}
	return id, nil
}

func parseIdentity(data []byte) (*Identity, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an ed25519 key")
	}
	return &Identity{priv: priv}, nil
}

// PublicKey is the 32-byte public key in standard base64 without padding
// (43 characters), as the enrollment API takes it.
func (id *Identity) PublicKey() string {
	return base64.RawStdEncoding.EncodeToString(id.priv.Public().(ed25519.PublicKey))
}

// Sign signs msg and returns the signature in standard base64 without padding.
func (id *Identity) Sign(msg []byte) string {
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(id.priv, msg))
}

// VerifySignature checks a Sign signature against a PublicKey string.
func VerifySignature(publicKey string, msg []byte, sig string) bool {
	pub, err := base64.RawStdEncoding.DecodeString(publicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return false
	}
	s, err := base64.RawStdEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(pub), msg, s)
}
