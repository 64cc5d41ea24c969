package update_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
)

func testKey(t *testing.T) *publish.Key {
	t.Helper()
	k, err := publish.LoadKey(publish.TestKeyFile(), "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPinnedPublicKeyParses(t *testing.T) {
	pk, err := update.ParsePublicKey(update.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if pk.ID() != 0x726E51117501AA9A {
		t.Fatalf("pinned key id %016X", pk.ID())
	}
	pk2, err := update.ParsePublicKey("untrusted comment: minisign public key 726E51117501AA9A\n" + update.PublicKey + "\n\n")
	if err != nil || !pk.Equal(pk2) {
		t.Fatalf("comment header not stripped: %v", err)
	}
}

func TestVerifySignature(t *testing.T) {
	k := testKey(t)
	pub, err := update.ParsePublicKey(k.PublicKeyLine())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("opengeni-agent v1.0.1 fixture artifact body\n")
	sig := k.Sign(msg, "timestamp:1")
	if err := update.VerifySignature(pub, msg, sig); err != nil {
		t.Fatalf("valid: %v", err)
	}
	if err := update.VerifySignature(pub, append(msg, "TAMPERED"...), sig); !errors.Is(err, update.ErrSignature) {
		t.Fatalf("tampered: %v", err)
	}
	// trusted comment edited → global signature fails
	bad := bytes.Replace(sig, []byte("timestamp:1"), []byte("timestamp:2"), 1)
	if err := update.VerifySignature(pub, msg, bad); !errors.Is(err, update.ErrSignature) {
		t.Fatalf("edited trusted comment: %v", err)
	}
	// another key's signature
	_, other, _ := minisign.GenerateKey(nil)
	osig := minisign.NewReader(bytes.NewReader(msg))
	osig.Read(make([]byte, len(msg)+1))
	if err := update.VerifySignature(pub, msg, osig.Sign(other)); !errors.Is(err, update.ErrSignature) || !strings.Contains(err.Error(), "signed by key") {
		t.Fatalf("other key: %v", err)
	}
	// legacy non-prehashed "Ed" signature by the right key is refused
	raw, _ := os.ReadFile(publish.TestKeyFile())
	var priv minisign.PrivateKey
	if err := priv.UnmarshalText(raw); err != nil {
		t.Fatal(err)
	}
	if err := update.VerifySignature(pub, msg, minisign.Sign(priv, msg)); !errors.Is(err, update.ErrSignature) {
		t.Fatalf("legacy Ed: %v", err)
	}
	if err := update.VerifySignature(pub, msg, []byte("garbage")); !errors.Is(err, update.ErrSignature) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestVerifySHA256(t *testing.T) {
	body := []byte("opengeni-agent v1.0.1 fixture artifact body\n")
	const want = "ab12058bbf409cd1949e5d0c4bec7ff3fdfbeaf9d8da13b4db9a362a647c66c9"
	if err := update.VerifySHA256(body, strings.ToUpper(want)); err != nil {
		t.Fatal(err)
	}
	if err := update.VerifySHA256(body, "00"); !errors.Is(err, update.ErrChecksum) {
		t.Fatal(err)
	}
}
