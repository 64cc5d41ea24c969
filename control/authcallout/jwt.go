package authcallout

import (
	"bytes"
	"crypto/sha512"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nkeys"

	"github.com/opengeni/opengeni-agent/internal/subject"
)

// The JWTs are encoded here rather than with nats-io/jwt's Encode so they are
// byte-compatible with the reference (control.md §6.4): its key order, iat
// from the injectable clock, no HTML escaping ('>' stays '>'), and jti =
// base32(SHA-512/256(JSON of the claims with jti "")) over the whole claims
// (nats-io/jwt hashes only the standard claims). nats-io/jwt decodes and
// verifies them (the tests check it).

const jwtHeader = `{"typ":"JWT","alg":"ed25519-nkey"}`

type permission struct {
	Allow []string `json:"allow"`
}

// respPermission lets a user publish a bounded number of replies to the
// reply subject of a request it received, whatever its pub allow list says.
type respPermission struct {
	Max int   `json:"max"`
	TTL int64 `json:"ttl"` // nanoseconds; 0 = the server default
}

type userNats struct {
	Type    string          `json:"type"`
	Version int             `json:"version"`
	Pub     permission      `json:"pub"`
	Sub     permission      `json:"sub"`
	Resp    *respPermission `json:"resp,omitempty"`
	Subs    int64           `json:"subs"`
	Data    int64           `json:"data"`
	Payload int64           `json:"payload"`
}

type userClaims struct {
	JTI  string   `json:"jti"`
	IAT  int64    `json:"iat"`
	ISS  string   `json:"iss"`
	Name string   `json:"name"`
	Sub  string   `json:"sub"`
	Aud  string   `json:"aud"`
	Nats userNats `json:"nats"`
	Exp  int64    `json:"exp"`
}

type responseNats struct {
	Type    string `json:"type"`
	Version int    `json:"version"`
	JWT     string `json:"jwt,omitempty"`
	Error   string `json:"error,omitempty"`
}

type responseClaims struct {
	JTI  string       `json:"jti"`
	IAT  int64        `json:"iat"`
	ISS  string       `json:"iss"`
	Aud  string       `json:"aud"`
	Sub  string       `json:"sub"`
	Nats responseNats `json:"nats"`
}

// marshal is JSON.stringify: no HTML escaping, no trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// jti is base32 (standard alphabet, no padding) of SHA-512/256 over the JSON
// of the claims with jti "".
func jti(blank []byte) string {
	h := sha512.Sum512_256(blank)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:])
}

// signJWT stamps the jti (setJTI is called with the blank-jti JSON) and
// signs header.payload with kp.
func signJWT(kp nkeys.KeyPair, claims any, setJTI func(string)) (string, error) {
	blank, err := marshal(claims)
	if err != nil {
		return "", err
	}
	setJTI(jti(blank))
	payload, err := marshal(claims)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding
	toSign := b64.EncodeToString([]byte(jwtHeader)) + "." + b64.EncodeToString(payload)
	sig, err := kp.Sign([]byte(toSign))
	if err != nil {
		return "", fmt.Errorf("authcallout: sign: %w", err)
	}
	return toSign + "." + b64.EncodeToString(sig), nil
}

// encodeUser signs an agent's user JWT carrying grant.
func encodeUser(kp nkeys.KeyPair, issuer, account, agentID, userNkey string, grant subject.Grant, iat, exp int64) (string, error) {
	c := &userClaims{IAT: iat, ISS: issuer, Name: agentID, Sub: userNkey, Aud: account, Exp: exp,
		Nats: userNats{Type: "user", Version: 2, Pub: permission{grant.Publish}, Sub: permission{grant.Subscribe}, Subs: -1, Data: -1, Payload: -1}}
	if grant.RespondOnce {
		c.Nats.Resp = &respPermission{Max: 1, TTL: int64(ReplyWindow)}
	}
	return signJWT(kp, c, func(j string) { c.JTI = j })
}

// encodeResponse signs an authorization response carrying a user JWT or an
// error.
func encodeResponse(kp nkeys.KeyPair, issuer, serverID, userNkey, userJWT, errMsg string, iat int64) (string, error) {
	c := &responseClaims{IAT: iat, ISS: issuer, Aud: serverID, Sub: userNkey,
		Nats: responseNats{Type: "authorization_response", Version: 2, JWT: userJWT, Error: errMsg}}
	return signJWT(kp, c, func(j string) { c.JTI = j })
}
