package delivery_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/dsn"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// TestABounceCarriesTheRemoteReplyBackToTheSender follows a permanent
// failure all the way: the remote 550, the DSN built from the result, and
// that DSN delivered from the null sender to the original sender's MX.
func TestABounceCarriesTheRemoteReplyBackToTheSender(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	e.DNS.Add(t,
		"example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2",
		"example.com. 300 IN MX 10 mx.example.com.", "mx.example.com. 300 IN A 127.0.0.3",
	)
	e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"bob@example.net": {Reply: smtpsink.Reply(550, "5.1.1", "<bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table")},
	}}})
	senderMX := e.sink("127.0.0.3", smtpsink.Options{})
	d := e.deliverer(e.options())

	msg := message("noreply@example.com", testBody)
	res := deliver(t, d, msg, "bob@example.net")[0]
	want(t, res, delivery.Failed, delivery.ReasonUnknownUser)
	if got := res.Diagnostic(); got != "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table" {
		t.Errorf("Diagnostic() = %q", got)
	}
	if !dsn.Wanted(msg.From, nil, dsn.Failed) {
		t.Fatal("no DSN wanted for a failure")
	}

	body, _ := msg.Open()
	header, err := dsn.OriginalHeader(body, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	attempt := time.Now()
	report, err := dsn.Build(dsn.Report{
		ReportingMTA:   relayName,
		Sender:         msg.From,
		ArrivalDate:    msg.ReceivedAt,
		Recipients:     []dsn.Recipient{res.DSNRecipient("", attempt, time.Time{})},
		OriginalHeader: header,
	})
	if err != nil {
		t.Fatal(err)
	}

	bounce := delivery.Message{
		ID: "dsn-1", From: report.From, Size: int64(len(report.Data)), EightBit: report.EightBit, SMTPUTF8: report.SMTPUTF8,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(report.Data)), nil },
	}
	want(t, deliver(t, d, bounce, report.To...)[0], delivery.Delivered, delivery.ReasonNone)

	got := senderMX.Accepted()
	if len(got) != 1 || got[0].From != "" || got[0].Rcpts[0] != "noreply@example.com" {
		t.Fatalf("sender's MX got %+v", got)
	}
	p, err := dsn.Parse(got[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	g, ok := p.Recipient("bob@example.net")
	if !ok {
		t.Fatalf("no group for bob: %v", p.Recipients)
	}
	for field, want := range map[string]string{
		"Action":          "failed",
		"Status":          "5.1.1",
		"Remote-MTA":      "dns; mx1.example.net",
		"Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
	} {
		if got := g.Get(field); got != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	if !strings.Contains(p.OriginalHeader, "Message-ID: <order-42@example.com>") {
		t.Errorf("original header missing: %q", p.OriginalHeader)
	}

	// The bounce itself, from the null sender, never causes another.
	if dsn.Wanted(bounce.From, nil, dsn.Failed) {
		t.Error("a DSN would be sent about a DSN")
	}
}

func TestADelayedResultDescribesTheRetryDeadline(t *testing.T) {
	until := time.Date(2026, 11, 30, 9, 30, 0, 0, time.UTC)
	r := delivery.Result{Recipient: "a@example.net", Status: delivery.Deferred, Code: "4.4.1",
		Detail: "connect to mx1.example.net [127.0.0.2:25]: connection refused", RemoteHost: "mx1.example.net"}
	got := r.DSNRecipient("rfc822;A@example.net", until.Add(-time.Hour), until)
	if got.Action != dsn.Delayed || !got.WillRetryUntil.Equal(until) || got.SMTPReply != "" || got.Detail != r.Detail || got.OriginalRecipient != "rfc822;A@example.net" {
		t.Errorf("DSN recipient %+v", got)
	}
}
