package delivery_test

import (
	"testing"
	"time"

	"mailroom.io/mailroom/internal/bounce"
	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

func TestUnknownUserClass(t *testing.T) {
	for _, tc := range []struct {
		reply delivery.Reply
		want  bool
	}{
		{delivery.Reply{Code: 550, Enhanced: "5.1.1", Text: "No such user"}, true},
		{delivery.Reply{Code: 550, Enhanced: "5.1.10", Text: "Null MX"}, true},
		{delivery.Reply{Code: 553, Enhanced: "5.1.3", Text: "Bad address syntax"}, true},
		{delivery.Reply{Code: 550, Enhanced: "5.1.8", Text: "Sender domain rejected"}, false},
		{delivery.Reply{Code: 550, Enhanced: "5.7.1", Text: "Blocked by policy"}, false},
		{delivery.Reply{Code: 450, Enhanced: "4.1.1", Text: "Try again"}, false},
		{delivery.Reply{Code: 550, Text: "<bob@example.net>... User unknown"}, true},
		{delivery.Reply{Code: 550, Text: "Mailbox does not exist"}, true},
		{delivery.Reply{Code: 550, Text: "Message rejected as spam"}, false},
		{delivery.Reply{Code: 554, Text: "no such user"}, false},
	} {
		if got := delivery.IsUnknownUser(tc.reply); got != tc.want {
			t.Errorf("IsUnknownUser(%s) = %v, want %v", tc.reply, got, tc.want)
		}
	}
}

func TestReplyStringIsTheReplyAsSent(t *testing.T) {
	r := delivery.Reply{Code: 550, Enhanced: "5.1.1", Text: "The account does not exist.\nPlease check the address."}
	want := "550-5.1.1 The account does not exist.\n550 5.1.1 Please check the address."
	if got := r.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := (delivery.Reply{Code: 421, Text: "busy"}).String(); got != "421 busy" {
		t.Errorf("without enhanced code: %q", got)
	}
	if got := (delivery.Reply{}).String(); got != "" {
		t.Errorf("no reply: %q", got)
	}
}

func TestClassOfLocalFailures(t *testing.T) {
	hard := func(k bounce.Kind) bounce.Class { return bounce.Class{Kind: k, Permanent: true} }
	soft := func(k bounce.Kind) bounce.Class { return bounce.Class{Kind: k} }
	for _, tc := range []struct {
		name string
		res  delivery.Result
		want bounce.Class
	}{
		{"delivered", delivery.Result{Status: delivery.Delivered, Reply: delivery.Reply{Code: 250, Text: "OK"}}, bounce.Class{}},
		{"suppressed", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonSuppressed, Code: "5.1.1"}, hard(bounce.InvalidRecipient)},
		{"null MX", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonNullMX, Code: "5.1.10"}, hard(bounce.Domain)},
		{"no such domain", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonNoRoute, Code: "5.1.2"}, hard(bounce.Domain)},
		{"malformed address", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonNoRoute, Code: "5.1.3"}, hard(bounce.InvalidRecipient)},
		{"DNS SERVFAIL", delivery.Result{Status: delivery.Deferred, Reason: delivery.ReasonDNS, Code: "4.4.3"}, soft(bounce.Domain)},
		{"TLS required", delivery.Result{Status: delivery.Deferred, Reason: delivery.ReasonTLS, Code: "4.7.10"}, soft(bounce.TLS)},
		// A server's reply does not hide that the relay's own TLS policy failed.
		{"STARTTLS refused", delivery.Result{Status: delivery.Deferred, Reason: delivery.ReasonTLS, Code: "4.7.0",
			Reply: delivery.Reply{Code: 454, Enhanced: "4.7.0", Text: "TLS not available due to local problem"}}, soft(bounce.TLS)},
		{"MTA-STS", delivery.Result{Status: delivery.Deferred, Reason: delivery.ReasonMTASTS, Code: "4.7.5"}, soft(bounce.TLS)},
		{"connection refused", delivery.Result{Status: delivery.Deferred, Reason: delivery.ReasonConnection, Code: "4.4.1", Detail: "connection refused"}, soft(bounce.Other)},
		{"unknown user", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonUnknownUser, Code: "5.1.1",
			Reply: delivery.Reply{Code: 550, Enhanced: "5.1.1", Text: "User unknown"}}, hard(bounce.InvalidRecipient)},
		// A 5xx greeting only made the relay try the next host.
		{"5xx greeting, deferred", delivery.Result{Status: delivery.Deferred, Reason: delivery.ReasonConnection, Code: "4.7.1",
			Reply: delivery.Reply{Code: 554, Enhanced: "5.7.1", Text: "blocked using zen.spamhaus.org"}}, soft(bounce.Policy)},
	} {
		if got := delivery.ClassOf(tc.res); got != tc.want {
			t.Errorf("%s: ClassOf = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestDeliverSetsEveryResultsClass(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2",
		"nomail.example. 300 IN MX 0 .")
	e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"bob@example.net":   {Reply: smtpsink.Reply(550, "5.1.1", "<bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table")},
		"carol@example.net": {Reply: smtpsink.Reply(452, "4.2.2", "Mailbox full")},
		"dave@example.net":  {Reply: smtpsink.Reply(554, "5.7.1", "Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org")},
		"erin@example.net":  {Reply: smtpsink.Reply(450, "4.2.0", "<erin@example.net>: Recipient address rejected: Greylisted")},
	}}})
	sup, done := openSuppressions(t, t.TempDir(), time.Hour, nil)
	defer done()
	opts := e.options()
	opts.Suppressions = sup
	d := e.deliverer(opts)
	res := deliver(t, d, message("noreply@example.com", testBody),
		"alice@example.net", "bob@example.net", "carol@example.net", "dave@example.net", "erin@example.net", "frank@nomail.example")
	for i, want := range []struct {
		kind bounce.Kind
		hard bool
	}{{bounce.None, false}, {bounce.InvalidRecipient, true}, {bounce.MailboxFull, false}, {bounce.Policy, true},
		{bounce.Throttled, false}, {bounce.Domain, true}} {
		if got := res[i].Class; got.Kind != want.kind || got.Hard() != want.hard {
			t.Errorf("%s: class %s hard=%v, want %s hard=%v", res[i].Recipient, got, got.Hard(), want.kind, want.hard)
		}
	}
	// Only the hard invalid recipient is suppressed.
	for i, r := range res {
		_, ok := sup.Lookup(r.Recipient)
		if ok != (i == 1) {
			t.Errorf("%s suppressed: %v", r.Recipient, ok)
		}
	}
	// And a suppressed address's bounce is still an invalid recipient.
	again := deliver(t, d, message("noreply@example.com", testBody), "bob@example.net")
	if again[0].Reason != delivery.ReasonSuppressed || !again[0].Class.Hard() || again[0].Class.Kind != bounce.InvalidRecipient {
		t.Errorf("suppressed bounce: %+v", again[0])
	}
}
