package relay_test

import (
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/dsn"
)

// TestReportsAreSignedWithTheKeysOfTheirFromDomain: a DSN from
// MAILER-DAEMON@<a domain the relay signs for, or a subdomain> gets that
// domain's signatures; one from a domain without keys gets none.
func TestReportsAreSignedWithTheKeysOfTheirFromDomain(t *testing.T) {
	e := startRelay(t, envOptions{})
	build := func(mta string) []byte {
		m, err := dsn.Build(dsn.Report{ReportingMTA: mta, Sender: "app@example.com", ArrivalDate: time.Now(), Date: time.Now(),
			Recipients: []dsn.Recipient{{FinalRecipient: "bob@example.net", Action: dsn.Failed, Status: "5.1.1"}}})
		if err != nil {
			t.Fatal(err)
		}
		return m.Data
	}
	sig, err := e.srv.SignReport(build("relay.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(sig, "DKIM-Signature:") != 2 || !strings.Contains(sig, "d=example.com") || !strings.Contains(sig, "s=ed1") {
		t.Fatalf("a report from MAILER-DAEMON@relay.example.com got %q; want example.com's two signatures", sig)
	}
	sig, err = e.srv.SignReport(build("relay.other.test"))
	if err != nil || sig != "" {
		t.Fatalf("a report from a domain without keys: %q, %v; want no signature", sig, err)
	}
}
