package bounce_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"mailroom.io/mailroom/internal/bounce"
)

// reply is one SMTP reply as a provider documents it: "550 5.1.1 text" or
// "550 text" without an enhanced code.
type reply string

// split parses the reply the way delivery.Reply holds it.
var replyRE = regexp.MustCompile(`^([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?(.*)$`)

func (r reply) split(t *testing.T) (int, string, string) {
	t.Helper()
	m := replyRE.FindStringSubmatch(string(r))
	if m == nil {
		t.Fatalf("malformed test reply %q", r)
	}
	code, _ := strconv.Atoi(m[1])
	return code, m[2], m[3]
}

type providerCase struct {
	reply reply
	kind  bounce.Kind
	hard  bool
}

func runCases(t *testing.T, cases []providerCase) {
	t.Helper()
	for _, tc := range cases {
		code, enh, text := tc.reply.split(t)
		got := bounce.Classify(code, enh, text)
		if got.Kind != tc.kind || got.Hard() != tc.hard {
			t.Errorf("Classify(%q) = %s hard=%v, want %s hard=%v", tc.reply, got, got.Hard(), tc.kind, tc.hard)
		}
		if got.Hard() == got.Soft() {
			t.Errorf("Classify(%q): Hard and Soft agree", tc.reply)
		}
	}
}

// Replies from "Gmail SMTP errors and codes",
// https://support.google.com/a/answer/3726730, and the Gmail replies listed
// at https://smtp.codes/google.
func TestGmail(t *testing.T) {
	runCases(t, []providerCase{
		{"550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. - gsmtp", bounce.InvalidRecipient, true},
		{"550 5.2.1 The email account that you tried to reach is disabled. - gsmtp", bounce.InvalidRecipient, true},
		{"452 4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp", bounce.MailboxFull, false},
		{"552 5.2.2 The email account that you tried to reach is over quota and inactive. - gsmtp", bounce.MailboxFull, false},
		{"450 4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time. - gsmtp", bounce.Throttled, false},
		{"421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. - gsmtp", bounce.Throttled, false},
		{"550 5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp", bounce.Policy, true},
		{"550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy. - gsmtp", bounce.Policy, true},
		{"550 5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked. - gsmtp", bounce.Policy, true},
		{"550 5.7.25 The IP address sending this message does not have a PTR record setup, or the corresponding forward DNS entry does not point to the sending IP. - gsmtp", bounce.Policy, true},
		{"421 4.7.0 TLS required for RCPT domain, closing connection. - gsmtp", bounce.TLS, false},
		{"421 4.7.0 Try again later, closing connection. - gsmtp", bounce.Throttled, false},
		{"553 5.1.2 We weren't able to find the recipient domain. Please check for any spelling errors, and make sure you didn't enter any spaces, periods, or other punctuation after the recipient's email address. - gsmtp", bounce.Domain, true},
		{"552 5.3.4 Your message exceeded Google's message size limits. - gsmtp", bounce.Other, true},
		{"451 4.4.2 Timeout - closing connection. - gsmtp", bounce.Other, false},
	})
}

// Replies from Microsoft's "Email non-delivery reports and SMTP errors in
// Exchange Online",
// https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online/non-delivery-reports-in-exchange-online,
// "Fix error code 5.7.700 through 5.7.750",
// https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online/fix-error-code-5-7-700-through-5-7-750,
// and Outlook.com's block list reply (S3150) as quoted at
// https://dijitul.uk/live-outlook-hotmail-rejects-emails-550-5-7-1-s3150.
func TestOutlookAndMicrosoft365(t *testing.T) {
	runCases(t, []providerCase{
		{"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", bounce.InvalidRecipient, true},
		{"550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", bounce.InvalidRecipient, true},
		// Directory-based edge blocking: the tenant has no such recipient.
		{"550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DB5EUR03FT001.eop-EUR03.prod.protection.outlook.com]", bounce.InvalidRecipient, true},
		{"550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.", bounce.Policy, true},
		{"550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", bounce.Policy, true},
		{"550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.", bounce.Policy, true},
		{"550 5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM", bounce.Policy, true},
		{"451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (AS761)", bounce.Throttled, false},
		{"450 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", bounce.Throttled, false},
		{"550 5.4.310 DNS domain example.com does not exist", bounce.Domain, true},
		// The reply code, not the enhanced code, says whether it is permanent.
		{"451 5.7.3 STARTTLS is required to send mail", bounce.TLS, false},
		{"550 5.2.2 mailbox full", bounce.MailboxFull, false},
		{"432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", bounce.Other, false},
		{"554 5.4.14 Hop count exceeded - possible mail loop", bounce.Other, true},
	})
}

// Replies from Yahoo's "SMTP Error Codes", https://senders.yahooinc.com/smtp-error-codes/
// (as archived in github.com/azumakuniyuki/feb-2024-no-auth-no-entry), and
// the Yahoo help pages https://help.yahoo.com/kb/SLN3444.html and
// https://help.yahoo.com/kb/review-xx-smtp-sln26151.html.
func TestYahoo(t *testing.T) {
	runCases(t, []providerCase{
		{"421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", bounce.Throttled, false},
		{"553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes", bounce.Policy, true},
		{"554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0] - mta1001.mail.gq1.yahoo.com", bounce.InvalidRecipient, true},
		{"554 delivery error: dd Sorry, your message to bob@yahoo.com cannot be delivered. This account is over quota.", bounce.MailboxFull, false},
		{"550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.", bounce.Policy, true},
		{"421 4.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes", bounce.Policy, false},
		{"421 Max message per connection reached, closing transmission channel", bounce.Throttled, false},
		{"451 Resources temporarily unavailable. Please try again later [#4.16.1].", bounce.Throttled, false},
		{"552 1 Requested mail action aborted, mailbox full", bounce.MailboxFull, false},
	})
}

// Postfix replies: the default texts and codes documented in postconf(5),
// https://www.postfix.org/postconf.5.html (unknown_local_recipient_reject_code,
// unknown_virtual_mailbox_reject_code, reject_unknown_recipient_domain,
// reject_rbl_client, smtpd_tls_security_level, smtpd_client_connection_count_limit),
// and postgrey's greylisting reply (https://postgrey.schweikert.ch/).
func TestPostfix(t *testing.T) {
	runCases(t, []providerCase{
		{"550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table", bounce.InvalidRecipient, true},
		{"550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in local recipient table", bounce.InvalidRecipient, true},
		{"450 4.1.2 <bob@nowhere.example>: Recipient address rejected: Domain not found", bounce.Domain, false},
		{"452 4.2.2 Mailbox full", bounce.MailboxFull, false},
		{"554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", bounce.Policy, true},
		{"530 5.7.0 Must issue a STARTTLS command first", bounce.TLS, true},
		{"421 4.7.0 mx.example.net Error: too many connections from 192.0.2.1", bounce.Throttled, false},
		{"450 4.2.0 <bob@example.net>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.net.html", bounce.Throttled, false},
		{"450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]", bounce.Policy, false},
		{"554 5.7.1 <bob@example.net>: Relay access denied", bounce.Domain, true},
		{"452 4.3.1 Insufficient system storage", bounce.Other, false},
	})
}

// Exim replies: the texts of the Exim specification,
// https://www.exim.org/exim-html-current/doc/html/spec_html/ch-access_control_lists.html
// (dnslists' default message, "Unrouteable address" for a recipient no
// router accepts, "Administrative prohibition", ratelimit) and
// ch-the_default_configuration_file.html.
func TestExim(t *testing.T) {
	runCases(t, []providerCase{
		{"550 Unrouteable address", bounce.InvalidRecipient, true},
		{"550 rejected: 192.0.2.1 is listed at zen.spamhaus.org", bounce.Policy, true},
		{"550 rejected because 192.0.2.1 is in a black list at bl.spamcop.net", bounce.Policy, true},
		{"550 Administrative prohibition", bounce.Policy, true},
		{"550 Unrouteable mail domain \"nowhere.example\"", bounce.Domain, true},
		{"451 Temporary local problem - please try later", bounce.Other, false},
		{"421 Too many concurrent SMTP connections; please try again later.", bounce.Throttled, false},
		{"451 Message rate limit exceeded - please try later", bounce.Throttled, false},
		{"550 Mailbox quota exceeded", bounce.MailboxFull, false},
		{"550 relay not permitted", bounce.Domain, true},
	})
}

func TestEnhancedCodeDecidesWhenSpecific(t *testing.T) {
	for _, tc := range []struct {
		code     int
		enhanced string
		text     string
		want     bounce.Kind
	}{
		// A specific code wins over misleading text.
		{550, "5.1.1", "blocked as spam", bounce.InvalidRecipient},
		{552, "5.2.2", "no such user", bounce.MailboxFull},
		{550, "5.7.10", "", bounce.TLS},
		{550, "5.4.4", "", bounce.Domain},
		{550, "5.1.2", "", bounce.Domain},
		{550, "5.1.8", "Sender domain rejected", bounce.Policy},
		{550, "5.7.13", "", bounce.InvalidRecipient},
		// Generic codes without a telling text.
		{550, "5.7.1", "", bounce.Policy},
		{550, "5.0.0", "", bounce.Other},
		{550, "", "", bounce.Other},
		// An enhanced code that is not one.
		{550, "5.1", "no such user", bounce.InvalidRecipient},
	} {
		if got := bounce.Classify(tc.code, tc.enhanced, tc.text); got.Kind != tc.want {
			t.Errorf("Classify(%d, %q, %q) = %s, want %s", tc.code, tc.enhanced, tc.text, got, tc.want)
		}
	}
}

func TestHardAndSoft(t *testing.T) {
	for _, tc := range []struct {
		class    bounce.Class
		severity string
	}{
		{bounce.Class{Kind: bounce.InvalidRecipient, Permanent: true}, "hard"},
		{bounce.Class{Kind: bounce.InvalidRecipient}, "soft"},
		{bounce.Class{Kind: bounce.MailboxFull, Permanent: true}, "soft"},
		{bounce.Class{Kind: bounce.Throttled, Permanent: true}, "soft"},
		{bounce.Class{Kind: bounce.Policy, Permanent: true}, "hard"},
		{bounce.Class{}, ""},
	} {
		if got := tc.class.Severity(); got != tc.severity {
			t.Errorf("%+v: severity %q, want %q", tc.class, got, tc.severity)
		}
	}
	if c := bounce.Classify(250, "2.0.0", "OK"); c != (bounce.Class{}) || c.Hard() || c.Soft() {
		t.Errorf("a 2xx reply classified as %+v", c)
	}
	if c := bounce.Classify(0, "5.1.1", ""); !c.Hard() {
		t.Errorf("an enhanced code of class 5 without a reply is permanent: %+v", c)
	}
}

func TestEveryKindHasANameAndASentence(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range bounce.Kinds() {
		name := k.String()
		if name == "" || seen[name] {
			t.Errorf("kind %d: name %q empty or repeated", k, name)
		}
		seen[name] = true
		if back, ok := bounce.ParseKind(name); !ok || back != k {
			t.Errorf("ParseKind(%q) = %v, %v", name, back, ok)
		}
		s := bounce.Class{Kind: k, Permanent: true}.Sentence()
		if !strings.HasSuffix(s, ".") || !strings.Contains(s, "(") {
			t.Errorf("%s: sentence %q", name, s)
		}
	}
	if (bounce.Class{}).Sentence() != "" {
		t.Error("no failure has a sentence")
	}
	if _, ok := bounce.ParseKind("nonsense"); ok {
		t.Error("ParseKind accepted nonsense")
	}
}
