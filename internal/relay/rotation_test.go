package relay_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	clocktesting "k8s.io/utils/clock/testing"

	"mailroom.io/mailroom/internal/relay/password"
)

// TestRotatedPasswordWorksUntilNotAfterWithoutReload: an operator-style
// credential ($mr-sha256$ hashes) whose previous password keeps working
// until its notAfter on the relay's clock, then stops, with no reload in
// between.
func TestRotatedPasswordWorksUntilNotAfterWithoutReload(t *testing.T) {
	oldPass, newPass := strings.Repeat("o", 43), strings.Repeat("n", 43)
	oldHash, err := password.HashToken(oldPass)
	if err != nil {
		t.Fatal(err)
	}
	newHash, _ := password.HashToken(newPass)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	creds := fmt.Sprintf(`  - username: app.shop
    passwordHash: %q
    previousPasswordHashes: [{hash: %q, notAfter: %q}]
    allowedSenders: [example.com]
`, newHash, oldHash, now.Add(time.Hour).Format(time.RFC3339))
	e := startRelay(t, envOptions{credentials: creds, clock: clk, limits: "{authFailures: 100}"})

	auth := func(pw string) error {
		c := e.dialStartTLS()
		defer c.Close()
		return c.Auth(sasl.NewPlainClient("", "app.shop", pw))
	}
	if err := auth(newPass); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := auth(oldPass); err != nil {
		t.Fatalf("old password within its grace period: %v", err)
	}
	clk.SetTime(now.Add(time.Hour - time.Second))
	if err := auth(oldPass); err != nil {
		t.Fatalf("old password a second before notAfter: %v", err)
	}
	clk.SetTime(now.Add(time.Hour))
	wantCode(t, auth(oldPass), 535, "5.7.8")
	if err := auth(newPass); err != nil {
		t.Fatalf("new password after the grace period: %v", err)
	}
	if strings.Contains(e.logs.String(), oldPass) || strings.Contains(e.logs.String(), oldHash) {
		t.Fatal("a password or hash was logged")
	}
}
