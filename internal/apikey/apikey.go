// Package apikey is the format of the HTTP API keys the credential
// controller writes into an SMTPCredential's Secret (key "api-key") and the
// relay checks: "mrk.<username>.<secret>", both parts base64url without
// padding. The username in the clear lets the relay find the one hash to
// check instead of trying every credential's; the secret is 32 random bytes,
// and only its hash (internal/relay/password) is in the relay's config.
package apikey

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
)

const prefix = "mrk."

var enc = base64.RawURLEncoding

// New returns a fresh key for username.
func New(username string) (string, error) {
	if username == "" {
		return "", errors.New("apikey: empty username")
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return prefix + enc.EncodeToString([]byte(username)) + "." + enc.EncodeToString(b[:]), nil
}

// User returns the username a key names, and false when key is not in the
// format (which the relay answers like a wrong key).
func User(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", false
	}
	u, secret, ok := strings.Cut(rest, ".")
	if !ok || secret == "" || strings.Contains(secret, ".") {
		return "", false
	}
	name, err := enc.DecodeString(u)
	if err != nil || len(name) == 0 {
		return "", false
	}
	if s, err := enc.DecodeString(secret); err != nil || len(s) != 32 {
		return "", false
	}
	return string(name), true
}
