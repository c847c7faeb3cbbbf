package main

import (
	"bytes"
	"strings"
	"testing"

	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func TestDkimpyVerdictIsShownInWords(t *testing.T) {
	for _, tc := range []struct{ report, want string }{
		{"0 pass d=example.test s=mr-20261201 a=rsa-sha256\n",
			"DKIM signature 1 (d=example.test, s=mr-20261201, rsa-sha256): valid: dkimpy verified it against the key published in BIND\n"},
		{"0 pass d=example.test s=a a=rsa-sha256\n1 fail d=example.test s=b a=ed25519-sha256\n",
			"DKIM signature 1 (d=example.test, s=a, rsa-sha256): valid: dkimpy verified it against the key published in BIND\n" +
				"DKIM signature 2 (d=example.test, s=b, ed25519-sha256): INVALID: dkimpy could not verify it against the key published in BIND\n"},
		{"no signatures\n", "dkimpy: no signatures\n"},
	} {
		if got := verdicts(tc.report); got != tc.want {
			t.Errorf("verdicts(%q) =\n%s\nwant\n%s", tc.report, got, tc.want)
		}
	}
}

// TestControllerRuntimeLoggerIsSetUp: once set, controller-runtime logs
// through it (errors shown, chatter dropped) instead of printing the
// "log.SetLogger(...) was never called" stack trace.
func TestControllerRuntimeLoggerIsSetUp(t *testing.T) {
	var buf bytes.Buffer
	setControllerRuntimeLogger(&buf)
	ctrllog.Log.WithName("client").Info("chatter")
	ctrllog.Log.WithName("client").Error(nil, "something failed")
	got := buf.String()
	if strings.Contains(got, "chatter") || !strings.Contains(got, "something failed") || strings.Contains(got, "SetLogger") {
		t.Fatalf("controller-runtime log output:\n%s", got)
	}
}
