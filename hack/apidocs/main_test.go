package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// docs/api.md is what the generator writes from the committed CRDs, and
// it names every field of every kind.
func TestAPIReferenceIsCurrent(t *testing.T) {
	got, err := render("../../config/crd/bases")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("docs/api.md is stale: run `make docs` and commit it")
	}
	for _, f := range []string{
		"`spec.hostname`", "`spec.delivery.retry.schedule`", "`spec.submission.tls.secretName`",
		"`spec.dkim.rotation.interval`", "`spec.dns.txtEncoding`", "`status.records[].verified`",
		"`spec.suspended`", "`spec.limits.messagesPerMinute`", "`status.conditions[].reason`",
	} {
		if !strings.Contains(string(got), "| "+f+" |") {
			t.Errorf("docs/api.md has no row for %s", f)
		}
	}
}
