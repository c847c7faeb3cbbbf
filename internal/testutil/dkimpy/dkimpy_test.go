package dkimpy

import (
	"strings"
	"testing"

	"mailroom.io/mailroom/internal/testutil/bindtest"
)

// An unsigned message must not pass, or every test built on Verify proves
// nothing. (Signed messages are verified by the relay's and the demo's
// tests, which have the keys.)
func TestUnsignedMessageFails(t *testing.T) {
	ns := bindtest.Start(t, "example.com")
	out, err := Verify(ns.Addr, []byte("From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"))
	if err == nil || !strings.Contains(out, "no signatures") {
		t.Fatalf("unsigned message: err=%v out=%q", err, out)
	}
}
