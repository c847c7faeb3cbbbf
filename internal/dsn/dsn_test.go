package dsn_test

import (
	"bytes"
	"errors"
	"net/mail"
	"os/exec"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/bounce"
	"mailroom.io/mailroom/internal/dsn"
)

var (
	arrived = time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	tried   = arrived.Add(2 * time.Hour)
	until   = arrived.Add(120 * time.Hour)
)

const origHeader = "Received: from app.shop.svc (10.42.0.7) by relay.example.com\r\n" +
	"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=mr-20261125;\r\n" +
	"\th=from:to:subject; bh=abc=; b=def=\r\n" +
	"From: Shop <noreply@example.com>\r\n" +
	"To: alice@example.net, bob@example.org\r\n" +
	"Subject: Your order\r\n" +
	"Message-ID: <order-42@example.com>\r\n"

func failureReport() dsn.Report {
	return dsn.Report{
		ReportingMTA: "relay.example.com",
		Sender:       "noreply@example.com",
		EnvelopeID:   "order-42",
		ArrivalDate:  arrived,
		Date:         tried,
		MessageID:    "dsn-1@relay.example.com",
		Recipients: []dsn.Recipient{
			{
				FinalRecipient:    "alice@example.net",
				OriginalRecipient: "rfc822;Alice@example.net",
				Action:            dsn.Failed,
				Status:            "5.1.1",
				RemoteMTA:         "mx1.example.net",
				SMTPReply:         "550-5.1.1 The email account that you tried to reach does not exist.\n550 5.1.1 Please check the address.",
				LastAttemptDate:   tried,
			},
			{
				FinalRecipient:  "bob@example.org",
				Action:          dsn.Failed,
				Status:          "5.1.10",
				Detail:          "example.org does not accept mail (null MX, RFC 7505)",
				LastAttemptDate: tried,
			},
		},
		OriginalHeader: []byte(origHeader + "\r\n"),
	}
}

func build(t *testing.T, r dsn.Report) (*dsn.Message, *dsn.Parsed) {
	t.Helper()
	m, err := dsn.Build(r)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	p, err := dsn.Parse(m.Data)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, m.Data)
	}
	return m, p
}

func TestFailureReportIsAMultipartReportOfDeliveryStatus(t *testing.T) {
	_, p := build(t, failureReport())
	if p.ReportType != "delivery-status" {
		t.Errorf("report-type = %q", p.ReportType)
	}
	want := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}
	if strings.Join(p.PartTypes, ",") != strings.Join(want, ",") {
		t.Errorf("parts = %v, want %v", p.PartTypes, want)
	}
	if got := p.Header.Get("Subject"); got != "Undelivered Mail Returned to Sender" {
		t.Errorf("Subject = %q", got)
	}
	if got := p.Header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", got)
	}
	if got := p.Header.Get("Message-ID"); got != "<dsn-1@relay.example.com>" {
		t.Errorf("Message-ID = %q", got)
	}
	if d, err := p.Header.Date(); err != nil || !d.Equal(tried) {
		t.Errorf("Date = %v, %v; want %v", d, err, tried)
	}
	to, err := p.Header.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != "noreply@example.com" {
		t.Errorf("To = %v, %v", to, err)
	}
	from, err := mail.ParseAddress(p.Header.Get("From"))
	if err != nil || from.Address != "MAILER-DAEMON@relay.example.com" {
		t.Errorf("From = %v, %v", from, err)
	}
}

func TestReportGoesFromTheNullSenderToTheOriginalSender(t *testing.T) {
	m, _ := build(t, failureReport())
	if m.From != "" {
		t.Errorf("envelope sender = %q, want the null sender", m.From)
	}
	if len(m.To) != 1 || m.To[0] != "noreply@example.com" {
		t.Errorf("envelope recipients = %v", m.To)
	}
	if m.EightBit || m.SMTPUTF8 {
		t.Errorf("an ASCII report needs neither 8BITMIME nor SMTPUTF8: %+v", m)
	}
}

func TestPerMessageFields(t *testing.T) {
	_, p := build(t, failureReport())
	pm := p.PerMessage
	if got := pm.Get("Reporting-MTA"); got != "dns; relay.example.com" {
		t.Errorf("Reporting-MTA = %q", got)
	}
	if got := pm.Get("Original-Envelope-Id"); got != "order-42" {
		t.Errorf("Original-Envelope-Id = %q", got)
	}
	if d, err := mail.ParseDate(pm.Get("Arrival-Date")); err != nil || !d.Equal(arrived) {
		t.Errorf("Arrival-Date = %q (%v)", pm.Get("Arrival-Date"), err)
	}
}

func TestPerRecipientFieldsCarryTheFullRemoteReply(t *testing.T) {
	_, p := build(t, failureReport())
	if len(p.Recipients) != 2 {
		t.Fatalf("%d recipient groups, want 2", len(p.Recipients))
	}
	alice, ok := p.Recipient("alice@example.net")
	if !ok {
		t.Fatal("no group for alice")
	}
	for field, want := range map[string]string{
		"Final-Recipient":    "rfc822; alice@example.net",
		"Original-Recipient": "rfc822; Alice@example.net",
		"Action":             "failed",
		"Status":             "5.1.1",
		"Remote-MTA":         "dns; mx1.example.net",
		// Both reply lines, unfolded by the parser.
		"Diagnostic-Code": "smtp; 550-5.1.1 The email account that you tried to reach does not exist. 550 5.1.1 Please check the address.",
	} {
		if got := alice.Get(field); got != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	if d, err := mail.ParseDate(alice.Get("Last-Attempt-Date")); err != nil || !d.Equal(tried) {
		t.Errorf("Last-Attempt-Date = %q", alice.Get("Last-Attempt-Date"))
	}
	if v := alice.Get("Will-Retry-Until"); v != "" {
		t.Errorf("a failure has no Will-Retry-Until, got %q", v)
	}

	bob, _ := p.Recipient("bob@example.org")
	if got := bob.Get("Diagnostic-Code"); got != "X-Mailroom; example.org does not accept mail (null MX, RFC 7505)" {
		t.Errorf("local diagnostic = %q", got)
	}
	if got := bob.Get("Remote-MTA"); got != "" {
		t.Errorf("no server was reached, but Remote-MTA = %q", got)
	}
	if got := bob.Get("Original-Recipient"); got != "" {
		t.Errorf("no ORCPT was given, but Original-Recipient = %q", got)
	}
}

func TestHumanReadablePartNamesRecipientsAndReplies(t *testing.T) {
	_, p := build(t, failureReport())
	for _, want := range []string{
		"<alice@example.net>: failed (5.1.1)",
		"mx1.example.net said:",
		"550-5.1.1 The email account that you tried to reach does not exist.",
		"550 5.1.1 Please check the address.",
		"<bob@example.org>: failed (5.1.10)",
		"null MX",
	} {
		if !strings.Contains(p.Text, want) {
			t.Errorf("text lacks %q:\n%s", want, p.Text)
		}
	}
}

func TestOriginalHeaderIsReturnedAsRFC822Headers(t *testing.T) {
	_, p := build(t, failureReport())
	if strings.TrimRight(p.OriginalHeader, "\r\n") != strings.TrimRight(origHeader, "\r\n") {
		t.Errorf("original header:\n%q\nwant\n%q", p.OriginalHeader, origHeader)
	}
	h, err := mail.ReadMessage(strings.NewReader(p.OriginalHeader + "\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Header.Get("Message-ID"); got != "<order-42@example.com>" {
		t.Errorf("original Message-ID = %q", got)
	}
}

func TestOriginalHeaderWithBareLineFeedsIsNormalized(t *testing.T) {
	r := failureReport()
	r.OriginalHeader = []byte("From: a@example.com\nSubject: x\n")
	m, p := build(t, r)
	if bytes.Contains(bytes.ReplaceAll(m.Data, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("report has a bare LF")
	}
	if p.OriginalHeader != "From: a@example.com\r\nSubject: x\r\n" {
		t.Errorf("original header = %q", p.OriginalHeader)
	}
}

func TestDelayReportSaysWhenTheRelayGivesUp(t *testing.T) {
	r := failureReport()
	r.Recipients = []dsn.Recipient{{
		FinalRecipient:  "alice@example.net",
		Action:          dsn.Delayed,
		Status:          "4.4.1",
		RemoteMTA:       "mx1.example.net",
		SMTPReply:       "451 4.4.1 Try again later",
		LastAttemptDate: tried,
		WillRetryUntil:  until,
	}}
	_, p := build(t, r)
	if got := p.Header.Get("Subject"); got != "Delayed Mail (still being retried)" {
		t.Errorf("Subject = %q", got)
	}
	g := p.Recipients[0]
	if g.Get("Action") != "delayed" || g.Get("Status") != "4.4.1" {
		t.Errorf("Action/Status = %q/%q", g.Get("Action"), g.Get("Status"))
	}
	if d, err := mail.ParseDate(g.Get("Will-Retry-Until")); err != nil || !d.Equal(until) {
		t.Errorf("Will-Retry-Until = %q (%v)", g.Get("Will-Retry-Until"), err)
	}
	if !strings.Contains(p.Text, "do not need to send the message again") {
		t.Errorf("text does not reassure the sender:\n%s", p.Text)
	}
}

func TestInternationalizedAddressesUseTheGlobalTypes(t *testing.T) {
	r := failureReport()
	r.Sender = "bestellung@bücher.example"
	r.Recipients[0].FinalRecipient = "jürgen@example.de"
	r.OriginalHeader = []byte("From: Bücher <bestellung@bücher.example>\r\nSubject: Grüße\r\n")
	m, p := build(t, r)
	if !m.EightBit || !m.SMTPUTF8 {
		t.Errorf("EightBit=%v SMTPUTF8=%v, want both", m.EightBit, m.SMTPUTF8)
	}
	want := []string{"text/plain", "message/global-delivery-status", "message/global-headers"}
	if strings.Join(p.PartTypes, ",") != strings.Join(want, ",") {
		t.Errorf("parts = %v, want %v", p.PartTypes, want)
	}
	g, ok := p.Recipient("jürgen@example.de")
	if !ok || g.Get("Final-Recipient") != "utf-8; jürgen@example.de" {
		t.Errorf("Final-Recipient = %q", g.Get("Final-Recipient"))
	}
	if !strings.Contains(p.Text, "<jürgen@example.de>") {
		t.Errorf("decoded text lacks the address:\n%s", p.Text)
	}
}

// TestGlobalReportsSayGlobalDeliveryStatusAtTheTop: the multipart/report's
// report-type names the status part's type (RFC 6522 §3), so a report
// with message/global-delivery-status says report-type=global-delivery-status
// (RFC 6533 §6).
func TestGlobalReportsSayGlobalDeliveryStatusAtTheTop(t *testing.T) {
	r := failureReport()
	r.Recipients[0].FinalRecipient = "jürgen@example.de"
	_, p := build(t, r)
	if p.ReportType != "global-delivery-status" {
		t.Errorf("report-type = %q, want global-delivery-status (parts %v)", p.ReportType, p.PartTypes)
	}
}

func TestEveryLineIsCRLFTerminatedAndWithinTheLengthLimit(t *testing.T) {
	r := failureReport()
	r.Recipients[0].SMTPReply = "550 5.7.1 " + strings.Repeat("blocked-by-policy ", 120)
	m, p := build(t, r)
	for i, line := range bytes.Split(m.Data, []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n") {
			t.Fatalf("line %d has a bare CR or LF", i)
		}
		if len(line) > 998 {
			t.Fatalf("line %d is %d octets long", i, len(line))
		}
	}
	g, _ := p.Recipient("alice@example.net")
	if got := strings.Join(strings.Fields(g.Get("Diagnostic-Code")), " "); got != "smtp; "+strings.TrimSpace(r.Recipients[0].SMTPReply) {
		t.Errorf("a long reply lost content: %q", got)
	}
}

func TestBuildRefusesWhatCannotBeAValidReport(t *testing.T) {
	for name, mutate := range map[string]func(*dsn.Report){
		"null sender":      func(r *dsn.Report) { r.Sender = "" },
		"no reporting MTA": func(r *dsn.Report) { r.ReportingMTA = "" },
		"no recipients":    func(r *dsn.Report) { r.Recipients = nil },
		"bad status":       func(r *dsn.Report) { r.Recipients[0].Status = "550" },
		"no action":        func(r *dsn.Report) { r.Recipients[0].Action = "" },
	} {
		t.Run(name, func(t *testing.T) {
			r := failureReport()
			mutate(&r)
			if _, err := dsn.Build(r); err == nil {
				t.Fatal("Build succeeded")
			}
		})
	}
	r := failureReport()
	r.Sender = ""
	if _, err := dsn.Build(r); !errors.Is(err, dsn.ErrNullSender) {
		t.Errorf("null sender: err = %v, want ErrNullSender", err)
	}
}

func TestWanted(t *testing.T) {
	for _, tc := range []struct {
		sender string
		notify []string
		action dsn.Action
		want   bool
	}{
		{"", nil, dsn.Failed, false}, // never bounce a bounce
		{"", []string{"FAILURE"}, dsn.Failed, false},
		{"a@example.com", nil, dsn.Failed, true},
		{"a@example.com", nil, dsn.Delayed, true},
		{"a@example.com", nil, dsn.Delivered, false},
		{"a@example.com", []string{"NEVER"}, dsn.Failed, false},
		{"a@example.com", []string{"SUCCESS"}, dsn.Failed, false},
		{"a@example.com", []string{"SUCCESS"}, dsn.Delivered, true},
		{"a@example.com", []string{"SUCCESS"}, dsn.Relayed, true},
		{"a@example.com", []string{"failure", "delay"}, dsn.Delayed, true},
		{"a@example.com", []string{"FAILURE"}, dsn.Delayed, false},
		{"a@example.com", []string{"FAILURE"}, dsn.Failed, true},
	} {
		if got := dsn.Wanted(tc.sender, tc.notify, tc.action); got != tc.want {
			t.Errorf("Wanted(%q, %v, %s) = %v, want %v", tc.sender, tc.notify, tc.action, got, tc.want)
		}
	}
}

// TestAnIndependentParserReadsTheReport checks the report with Python's
// email package, which knows message/delivery-status, instead of only with
// our own Parse.
func TestAnIndependentParserReadsTheReport(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test: install it (Debian package python3)")
	}
	m, err := dsn.Build(failureReport())
	if err != nil {
		t.Fatal(err)
	}
	script := `
import sys, email, email.policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
assert msg.get_content_type() == "multipart/report", msg.get_content_type()
assert msg.get_param("report-type") == "delivery-status"
parts = msg.get_payload()
status = parts[1]
assert status.get_content_type() == "message/delivery-status"
groups = status.get_payload()
print(groups[0]["Reporting-MTA"])
for g in groups[1:]:
    print(g["Final-Recipient"], "|", g["Action"], "|", g["Status"], "|", " ".join(g["Diagnostic-Code"].split()))
print(parts[2].get_content_type())
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = bytes.NewReader(m.Data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := "dns; relay.example.com\n" +
		"rfc822; alice@example.net | failed | 5.1.1 | smtp; 550-5.1.1 The email account that you tried to reach does not exist. 550 5.1.1 Please check the address.\n" +
		"rfc822; bob@example.org | failed | 5.1.10 | X-Mailroom; example.org does not accept mail (null MX, RFC 7505)\n" +
		"text/rfc822-headers\n"
	if string(out) != want {
		t.Errorf("python read:\n%s\nwant:\n%s", out, want)
	}
}

func TestOriginalHeaderStopsAtTheBody(t *testing.T) {
	msg := origHeader + "\r\nBody line one.\r\nFrom: not a header\r\n"
	h, err := dsn.OriginalHeader(strings.NewReader(msg), 64<<10)
	if err != nil || string(h) != origHeader {
		t.Errorf("header = %q, %v", h, err)
	}
	// Cut at a whole line when it is too long.
	h, _ = dsn.OriginalHeader(strings.NewReader(msg), 100)
	if !strings.HasSuffix(string(h), "\r\n") || len(h) > 100 || !strings.HasPrefix(origHeader, string(h)) {
		t.Errorf("limited header = %q", h)
	}
	// A message that is all header.
	h, _ = dsn.OriginalHeader(strings.NewReader("Subject: x\r\nFrom: y"), 1000)
	if string(h) != "Subject: x\r\nFrom: y" {
		t.Errorf("header-only message = %q", h)
	}
}

func TestHumanReadablePartSaysEachFailedRecipientsBounceClass(t *testing.T) {
	r := failureReport()
	r.Recipients[0].Class = bounce.Class{Kind: bounce.InvalidRecipient, Permanent: true}
	r.Recipients[1].Class = bounce.Class{Kind: bounce.Domain, Permanent: true}
	delayed := dsn.Recipient{FinalRecipient: "carol@example.net", Action: dsn.Delayed, Status: "4.2.2",
		SMTPReply: "452 4.2.2 Mailbox full", LastAttemptDate: tried, WillRetryUntil: tried.Add(time.Hour),
		Class: bounce.Class{Kind: bounce.MailboxFull}}
	r.Recipients = append(r.Recipients, delayed)
	_, p := build(t, r)
	text := strings.Join(strings.Fields(p.Text), " ") // the sentences are wrapped
	for _, want := range []string{
		"<alice@example.net>: failed (5.1.1) The recipient's mailbox does not exist (invalid recipient).",
		"<bob@example.org>: failed (5.1.10) The recipient's domain does not exist",
		"550-5.1.1 The email account that you tried to reach does not exist.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, p.Text)
		}
	}
	// A delay is not a failure: no class sentence for it.
	if strings.Contains(text, "(mailbox full)") {
		t.Errorf("delayed recipient got a class sentence:\n%s", p.Text)
	}
}

func TestHumanReadablePartWithoutClassIsUnchanged(t *testing.T) {
	_, p := build(t, failureReport())
	for _, k := range bounce.Kinds() {
		if s := (bounce.Class{Kind: k, Permanent: true}).Sentence(); strings.Contains(p.Text, s[:20]) {
			t.Errorf("unclassified report says %q", s)
		}
	}
}
