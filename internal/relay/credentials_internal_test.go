package relay

import (
	"strings"
	"testing"

	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relay/password"
)

// TestUnknownUsersCostTheConfiguredKindOfHash: with only operator-made
// ($mr-sha256$) hashes an unknown user is checked against a $mr-sha256$
// dummy, not bcrypt, whose 60 ms would tell unknown users from known ones.
func TestUnknownUsersCostTheConfiguredKindOfHash(t *testing.T) {
	tok, _ := password.HashToken(strings.Repeat("t", 43))
	bc, _ := password.Hash("hand-written")
	tokens := &config.Config{Credentials: []config.Credential{{PasswordHash: tok}, {PasswordHash: tok}}}
	mixed := &config.Config{Credentials: []config.Credential{{PasswordHash: tok}, {PasswordHash: bc}}}
	if slowHashes(tokens) || !slowHashes(mixed) || slowHashes(tokens) {
		t.Fatal("slowHashes misjudges the configurations")
	}
	if !password.IsToken(dummyToken()) {
		t.Fatal("the fast dummy is not a token hash")
	}
}
