package delivery_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// twoMX publishes example.net with mx1 (preference 10, 127.0.0.2) and mx2
// (preference 20, 127.0.0.3).
func twoMX(e *env) {
	e.DNS.Add(e.t,
		"example.net. 300 IN MX 10 mx1.example.net.",
		"example.net. 300 IN MX 20 mx2.example.net.",
		"mx1.example.net. 300 IN A 127.0.0.2",
		"mx2.example.net. 300 IN A 127.0.0.3",
	)
}

func TestDeliversToThePreferredMX(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	twoMX(e)
	mx1 := e.sink("127.0.0.2", smtpsink.Options{Hostname: "mx1.example.net"})
	mx2 := e.sink("127.0.0.3", smtpsink.Options{Hostname: "mx2.example.net"})
	d := e.deliverer(e.options())

	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	r := res[0]
	if r.RemoteHost != "mx1.example.net" || r.RemoteIP != "127.0.0.2" || r.Code != "2.0.0" || r.Reply.Code != 250 {
		t.Errorf("result = %+v", r)
	}
	if len(mx2.Messages()) != 0 {
		t.Error("the backup MX got mail")
	}
	got := mx1.Accepted()
	if len(got) != 1 {
		t.Fatalf("mx1 got %d messages", len(got))
	}
	m := got[0]
	if m.From != "noreply@example.com" || strings.Join(m.Rcpts, ",") != "alice@example.net" {
		t.Errorf("envelope = %s -> %v", m.From, m.Rcpts)
	}
	if string(m.Data) != testBody {
		t.Errorf("data changed in transit:\n%q\nwant\n%q", m.Data, testBody)
	}
	if m.Helo != relayName {
		t.Errorf("EHLO %q, want %q", m.Helo, relayName)
	}
	if m.MailOptions.Size != int64(len(testBody)) {
		t.Errorf("SIZE=%d, want %d", m.MailOptions.Size, len(testBody))
	}
}

func TestNextMXWhenTheFirstRefusesConnections(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	twoMX(e)
	e.refuse("127.0.0.2")
	mx2 := e.sink("127.0.0.3", smtpsink.Options{})
	d := e.deliverer(e.options())

	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].RemoteHost != "mx2.example.net" || len(mx2.Accepted()) != 1 {
		t.Errorf("delivered to %s; mx2 has %d", res[0].RemoteHost, len(mx2.Accepted()))
	}
	if _, _, down := d.HostDown().Down("127.0.0.2:" + itoa(e.Port)); !down {
		t.Error("the refusing server is not remembered as down")
	}
	recs := e.Logs.records("connection failed")
	if len(recs) != 1 || recs[0]["remoteIP"] != "127.0.0.2" || !strings.Contains(recs[0]["detail"].(string), "refused") {
		t.Errorf("connection failure log: %v", recs)
	}
}

func TestNextMXOnA4xxGreeting(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	twoMX(e)
	mx1 := e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{
		Connect: smtpsink.Action{Reply: smtpsink.Reply(421, "4.3.2", "mx1 is busy, try later")},
	}})
	mx2 := e.sink("127.0.0.3", smtpsink.Options{})
	d := e.deliverer(e.options())

	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if len(mx1.Conns()) != 1 || len(mx2.Accepted()) != 1 {
		t.Errorf("mx1 connections %d, mx2 messages %d", len(mx1.Conns()), len(mx2.Accepted()))
	}
}

func TestEveryMXFailingDefersWithTheLastReply(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	twoMX(e)
	e.refuse("127.0.0.2")
	e.sink("127.0.0.3", smtpsink.Options{Script: smtpsink.Script{
		Connect: smtpsink.Action{Reply: smtpsink.Reply(554, "5.7.1", "go away")},
	}})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	// A 5xx greeting only makes us try elsewhere; the outcome is a
	// deferral, with a deferral's status code.
	want(t, res[0], delivery.Deferred, delivery.ReasonConnection)
	if res[0].Reply.Code != 554 || res[0].Code != "4.7.1" || res[0].RemoteHost != "mx2.example.net" {
		t.Errorf("result = %+v", res[0])
	}
}

func TestEveryMXRefusingServiceAtTheGreetingFails(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	twoMX(e)
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		e.sink(ip, smtpsink.Options{Script: smtpsink.Script{
			Connect: smtpsink.Action{Reply: smtpsink.Reply(554, "5.7.1", "no service for you")},
		}})
	}
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	// RFC 5321 §3.8: 554 at the greeting means no service; when every MX
	// says so there is nobody to retry with.
	want(t, res[0], delivery.Failed, delivery.ReasonConnection)
	if res[0].Reply.String() != "554 5.7.1 no service for you" || res[0].Code != "5.7.1" {
		t.Errorf("result = %+v", res[0])
	}
	// The refusal is remembered, and the next message fails the same way
	// without a connection.
	res = deliver(t, d, message("noreply@example.com", testBody), "bob@example.net")
	want(t, res[0], delivery.Failed, delivery.ReasonConnection)
	if res[0].Reply.Code != 554 {
		t.Errorf("second result = %+v", res[0])
	}
}

func TestImplicitMXWhenTheDomainHasNoMXRecords(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].RemoteHost != "example.net" || len(s.Accepted()) != 1 {
		t.Errorf("result %+v; sink has %d", res[0], len(s.Accepted()))
	}
}

func TestNullMXBouncesAtOnce(t *testing.T) {
	e := newEnv(t)
	e.DNS.Add(t, "example.net. 300 IN MX 0 .", "example.net. 300 IN A 127.0.0.2")
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	want(t, res[0], delivery.Failed, delivery.ReasonNullMX)
	if res[0].Code != "5.1.10" {
		t.Errorf("code %s, want 5.1.10 (RFC 7505)", res[0].Code)
	}
}

func TestNonexistentDomainBounces(t *testing.T) {
	e := newEnv(t)
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "alice@nowhere.test")
	want(t, res[0], delivery.Failed, delivery.ReasonNoRoute)
	if res[0].Code != "5.1.2" {
		t.Errorf("code %s", res[0].Code)
	}
}

func TestMXHostsWithoutAddressesBounce(t *testing.T) {
	e := newEnv(t)
	e.DNS.Add(t, "example.net. 300 IN MX 10 gone.example.net.")
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	want(t, res[0], delivery.Failed, delivery.ReasonNoRoute)
	if res[0].Code != "5.4.4" {
		t.Errorf("code %s", res[0].Code)
	}
}

func TestTemporaryDNSFailureDefers(t *testing.T) {
	e := newEnv(t)
	e.DNS.SetFault("example.net", 0, 1) // SERVFAIL for every type
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "alice@example.net")
	want(t, res[0], delivery.Deferred, delivery.ReasonDNS)
	if res[0].Code != "4.4.3" {
		t.Errorf("code %s", res[0].Code)
	}
}

func TestEachRecipientHasItsOwnOutcome(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"bob@example.net":   {Reply: smtpsink.Reply(550, "5.1.1", "<bob@example.net>: Recipient address rejected: User unknown")},
		"carol@example.net": {Reply: smtpsink.Reply(450, "4.2.1", "Mailbox busy, try again")},
		"dave@example.net":  {Reply: smtpsink.Reply(550, "5.7.1", "Relaying denied")},
	}}})
	d := e.deliverer(e.options())

	res := deliver(t, d, message("noreply@example.com", testBody),
		"alice@example.net", "bob@example.net", "carol@example.net", "dave@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	want(t, res[1], delivery.Failed, delivery.ReasonUnknownUser)
	want(t, res[2], delivery.Deferred, delivery.ReasonRecipient)
	want(t, res[3], delivery.Failed, delivery.ReasonRecipient)
	if !res[1].SuppressionCandidate || res[3].SuppressionCandidate {
		t.Errorf("suppression candidates: bob %v, dave %v", res[1].SuppressionCandidate, res[3].SuppressionCandidate)
	}
	if got := res[1].Reply.String(); got != "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown" {
		t.Errorf("bob's full reply = %q", got)
	}
	if res[2].Code != "4.2.1" || res[3].Code != "5.7.1" {
		t.Errorf("codes %s %s", res[2].Code, res[3].Code)
	}
	msgs := s.Accepted()
	if len(msgs) != 1 || strings.Join(msgs[0].Rcpts, ",") != "alice@example.net" {
		t.Errorf("sink got %+v", msgs)
	}
}

func TestA4xxIsRetriedOnTheNextAttempt(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"*": {Reply: smtpsink.Reply(451, "4.7.1", "Greylisted, please try again later"), Times: 1},
	}}})
	d := e.deliverer(e.options())
	msg := message("noreply@example.com", testBody)
	want(t, deliver(t, d, msg, "alice@example.net")[0], delivery.Deferred, delivery.ReasonRecipient)
	want(t, deliver(t, d, msg, "alice@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	if len(s.Accepted()) != 1 {
		t.Errorf("sink accepted %d messages", len(s.Accepted()))
	}
}

func TestMAILRefusalAppliesToEveryRecipient(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{
		Mail: smtpsink.Action{Reply: smtpsink.Reply(553, "5.7.1", "Sender rejected")},
	}})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net", "b@example.net")
	for _, r := range res {
		want(t, r, delivery.Failed, delivery.ReasonMessage)
		if r.SuppressionCandidate {
			t.Error("a sender refusal suppressed a recipient")
		}
	}
}

func TestRefusalAfterDataFailsTheMessage(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{
		Data: smtpsink.Action{Reply: smtpsink.Reply(554, "5.7.1", "Message content rejected")},
	}})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Failed, delivery.ReasonMessage)
	if res[0].Reply.String() != "554 5.7.1 Message content rejected" {
		t.Errorf("reply %q", res[0].Reply.String())
	}
}

func TestConnectionDroppedMidDataDefers(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{Script: smtpsink.Script{Data: smtpsink.Action{Drop: true, Times: 1}}})
	d := e.deliverer(e.options())
	msg := message("noreply@example.com", testBody)
	res := deliver(t, d, msg, "a@example.net")
	want(t, res[0], delivery.Deferred, delivery.ReasonConnection)
	if len(s.Accepted()) != 0 {
		t.Fatal("the sink kept a message it dropped")
	}
	// The broken connection is not reused: the next attempt works.
	want(t, deliver(t, d, msg, "a@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	if n := len(s.Conns()); n != 2 {
		t.Errorf("%d connections, want a new one after the drop", n)
	}
}

func TestAStalledServerTimesOutAndDefers(t *testing.T) {
	for _, phase := range []string{"greeting", "rcpt", "end of data"} {
		t.Run(phase, func(t *testing.T) {
			e := newEnv(t, "127.0.0.2")
			e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
			var sc smtpsink.Script
			switch phase {
			case "greeting":
				sc.Connect = smtpsink.Action{Stall: true}
			case "rcpt":
				sc.Rcpt = map[string]smtpsink.Action{"*": {Stall: true}}
			case "end of data":
				sc.Data = smtpsink.Action{Stall: true}
			}
			e.sink("127.0.0.2", smtpsink.Options{Script: sc})
			opts := e.options()
			opts.Timeouts.Command = 2 * time.Second
			opts.Timeouts.FinalDot = 2 * time.Second
			d := e.deliverer(opts)
			res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
			want(t, res[0], delivery.Deferred, delivery.ReasonConnection)
			if !strings.Contains(res[0].Detail, "timeout") {
				t.Errorf("detail %q does not say it timed out", res[0].Detail)
			}
			_, _, down := d.HostDown().Down("127.0.0.2:" + itoa(e.Port))
			if down != (phase == "greeting") {
				t.Errorf("remembered as down: %v", down)
			}
		})
	}
}

func TestCancellationEndsAStalledAttempt(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{Script: smtpsink.Script{Data: smtpsink.Action{Stall: true}}})
	d := e.deliverer(e.options()) // a minute of patience
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []delivery.Result)
	go func() { done <- d.Deliver(ctx, message("noreply@example.com", testBody), rcpts("a@example.net")) }()
	eventually(t, "the message to reach the stalling server", func() bool { return len(s.Messages()) == 1 })
	cancel()
	select {
	case res := <-done:
		want(t, res[0], delivery.Deferred, delivery.ReasonConnection)
	case <-time.After(60 * time.Second):
		t.Fatal("Deliver did not return after cancellation")
	}
}

func TestConnectionsAreReusedForTheNextMessage(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	// Without STARTTLS, so the commands can be read in the transcript.
	s := e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"nobody@example.net": {Reply: smtpsink.Reply(550, "5.1.1", "no such user")},
	}}})
	opts := e.options()
	opts.IdleTimeout = time.Minute
	d := e.deliverer(opts)
	for _, to := range []string{"a@example.net", "nobody@example.net", "b@example.net", "c@example.net"} {
		deliver(t, d, message("noreply@example.com", testBody), to)
	}
	// The first connection only learns that there is no STARTTLS.
	if n := len(s.Conns()); n != 2 {
		t.Errorf("%d connections for 4 messages, want 2", n)
	}
	msgs := s.Accepted()
	if len(msgs) != 3 || msgs[0].ConnID != msgs[2].ConnID {
		t.Fatalf("%d messages accepted, want 3 on one connection", len(msgs))
	}
	// After a transaction without accepted recipients, RSET cleans up.
	if tr := s.Conns()[msgs[0].ConnID-1].Transcript; !contains(tr, "RSET") {
		t.Errorf("no RSET after the refused transaction: %v", tr)
	}
}

func TestMaxMessagesPerConnection(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{})
	opts := e.options()
	opts.IdleTimeout = time.Minute
	opts.MaxMessagesPerConnection = 2
	d := e.deliverer(opts)
	for range 5 {
		deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	}
	if n := len(s.Conns()); n != 3 {
		t.Errorf("%d connections for 5 messages at 2 per connection, want 3", n)
	}
}

func TestAStaleReusedConnectionIsReplacedTransparently(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{})
	opts := e.options()
	opts.IdleTimeout = time.Minute
	d := e.deliverer(opts)
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	// The server now hangs up on the idle connection's next MAIL, as a
	// server that timed the idle connection out would.
	s.SetScript(smtpsink.Script{Mail: smtpsink.Action{Drop: true, Times: 1}})
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if n := len(s.Conns()); n != 2 {
		t.Errorf("%d connections, want the stale one and its replacement", n)
	}
}

func TestConnectionsPerDomainAreLimited(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	gate := make(chan struct{})
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{Script: smtpsink.Script{Data: smtpsink.Action{Wait: gate}}})
	opts := e.options()
	opts.MaxConnectionsPerDomain = 3
	opts.IdleTimeout = time.Minute
	d := e.deliverer(opts)

	const n = 12
	var wg sync.WaitGroup
	results := make([][]delivery.Result, n)
	for i := range n {
		wg.Go(func() { results[i] = deliver(t, d, message("noreply@example.com", testBody), "a@example.net") })
	}
	eventually(t, "3 sessions at DATA and the other deliveries waiting", func() bool {
		st := d.Destinations()
		return s.Waiting("data") == 3 && len(st) == 1 && st[0].Waiting == n-3
	})
	if a := s.Active(); a != 3 {
		t.Errorf("%d connections open, want the limit of 3", a)
	}
	close(gate)
	wg.Wait()
	for _, r := range results {
		want(t, r[0], delivery.Delivered, delivery.ReasonNone)
	}
	if p := s.Peak(); p != 3 {
		t.Errorf("peak of %d connections, want 3", p)
	}
	if c := len(s.Conns()); c != 3 {
		t.Errorf("%d connections for %d messages, want 3 reused", c, n)
	}
}

func TestADeadServerIsNotHammered(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{
		Connect: smtpsink.Action{Reply: smtpsink.Reply(421, "4.3.2", "Service not available")},
	}})
	c := newClock()
	opts := e.options()
	opts.Now = c.Now
	opts.HostDownFor = 2 * time.Minute
	d := e.deliverer(opts)

	var wg sync.WaitGroup
	var mu sync.Mutex
	reasons := map[delivery.Reason]int{}
	for range 200 {
		wg.Go(func() {
			r := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")[0]
			mu.Lock()
			reasons[r.Reason]++
			mu.Unlock()
		})
	}
	wg.Wait()
	conns := len(s.Conns())
	if conns < 1 || conns > 10 {
		t.Errorf("%d connections for 200 messages; want at most the per-domain limit of 10", conns)
	}
	if reasons[delivery.ReasonHostDown]+reasons[delivery.ReasonConnection] != 200 || reasons[delivery.ReasonHostDown] < 190 {
		t.Errorf("outcomes %v", reasons)
	}
	if n := e.metric("mailroom_delivery_host_down_skips_total"); n < 190 {
		t.Errorf("host down skips metric = %v", n)
	}

	for range 50 {
		deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	}
	if n := len(s.Conns()); n != conns {
		t.Errorf("%d more connections while the server is remembered as down", n-conns)
	}
	c.Advance(2 * time.Minute)
	deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	if n := len(s.Conns()); n != conns+1 {
		t.Errorf("after the memory expired: %d new connections, want 1", n-conns)
	}
}

func TestTooManyRecipientsAreSentInFurtherTransactions(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{MaxRecipients: 2})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody),
		"a@example.net", "b@example.net", "c@example.net", "d@example.net", "e@example.net")
	for _, r := range res {
		want(t, r, delivery.Delivered, delivery.ReasonNone)
	}
	var split []int
	for _, m := range s.Accepted() {
		split = append(split, len(m.Rcpts))
	}
	if len(split) != 3 || split[0] != 2 || split[1] != 2 || split[2] != 1 || len(s.Conns()) != 1 {
		t.Errorf("transactions %v on %d connections, want [2 2 1] on 1", split, len(s.Conns()))
	}
}

func TestMessagesLargerThanTheServersSIZEFailWithoutBeingSent(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{MaxMessageBytes: 64})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Failed, delivery.ReasonSize)
	if res[0].Code != "5.3.4" || len(s.Messages()) != 0 {
		t.Errorf("code %s, sink got %d", res[0].Code, len(s.Messages()))
	}
}

func TestSMTPUTF8IsUsedWhenNeededAndRequired(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	e.DNS.Add(t,
		"utf8.example. 300 IN A 127.0.0.2",
		"ascii.example. 300 IN A 127.0.0.3",
	)
	withUTF8 := e.sink("127.0.0.2", smtpsink.Options{SMTPUTF8: true})
	e.sink("127.0.0.3", smtpsink.Options{})
	d := e.deliverer(e.options())

	msg := message("bestellung@bücher.example", testBody)
	want(t, deliver(t, d, msg, "jürgen@utf8.example")[0], delivery.Delivered, delivery.ReasonNone)
	m := withUTF8.Accepted()[0]
	if !m.MailOptions.UTF8 || m.From != "bestellung@bücher.example" || m.Rcpts[0] != "jürgen@utf8.example" {
		t.Errorf("SMTPUTF8 %v, envelope %s -> %v", m.MailOptions.UTF8, m.From, m.Rcpts)
	}
	res := deliver(t, d, msg, "jürgen@ascii.example")
	want(t, res[0], delivery.Failed, delivery.ReasonUnsupported)
	if res[0].Code != "5.6.7" {
		t.Errorf("code %s", res[0].Code)
	}
}

func TestInternationalizedDomainsAreLookedUpAsALabels(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "xn--bcher-kva.example. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{SMTPUTF8: true})
	d := e.deliverer(e.options())
	want(t, deliver(t, d, message("noreply@example.com", testBody), "info@bücher.example")[0], delivery.Delivered, delivery.ReasonNone)
	if len(s.Accepted()) != 1 {
		t.Error("not delivered")
	}
}

func TestDSNParametersArePassedOn(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{DSN: true})
	d := e.deliverer(e.options())
	msg := message("noreply@example.com", testBody)
	msg.EnvelopeID, msg.Return = "order-42", "HDRS"
	ctx := context.Background()
	d.Deliver(ctx, msg, []delivery.Recipient{{Address: "a@example.net", Notify: []string{"failure", "delay"}, OriginalRecipient: "rfc822;A@example.net"}})
	m := s.Accepted()[0]
	if m.MailOptions.EnvelopeID != "order-42" || m.MailOptions.Return != smtp.DSNReturnHeaders {
		t.Errorf("MAIL options %+v", m.MailOptions)
	}
	o := m.RcptOptions[0]
	if len(o.Notify) != 2 || o.Notify[0] != smtp.DSNNotifyFailure || o.Notify[1] != smtp.DSNNotifyDelayed || o.OriginalRecipient != "A@example.net" {
		t.Errorf("RCPT options %+v", o)
	}
}

func TestTheNullSenderIsSentAsAnEmptyPath(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{})
	d := e.deliverer(e.options())
	want(t, deliver(t, d, message("", testBody), "a@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	m := s.Accepted()[0]
	if tr := s.Conns()[m.ConnID-1].Transcript; m.From != "" || !contains(tr, "MAIL FROM:<> BODY=8BITMIME SIZE="+itoa(len(testBody))) {
		t.Errorf("transcript %v", tr)
	}
}

func TestRecipientsOfSeveralDomainsAreDeliveredSeparately(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	e.DNS.Add(t, "one.example. 300 IN A 127.0.0.2", "two.example. 300 IN A 127.0.0.3")
	one := e.sink("127.0.0.2", smtpsink.Options{})
	two := e.sink("127.0.0.3", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"*": {Reply: smtpsink.Reply(452, "4.2.2", "Mailbox full")},
	}}})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "a@one.example", "b@two.example", "c@one.example", "x@null.example")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	want(t, res[1], delivery.Deferred, delivery.ReasonRecipient)
	want(t, res[2], delivery.Delivered, delivery.ReasonNone)
	want(t, res[3], delivery.Failed, delivery.ReasonNoRoute)
	if len(one.Accepted()) != 1 || len(one.Accepted()[0].Rcpts) != 2 || len(two.Accepted()) != 0 {
		t.Errorf("one: %v, two: %v", one.Accepted(), two.Accepted())
	}
}

func TestAnUnreadableMessageDefers(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{})
	d := e.deliverer(e.options())
	msg := message("noreply@example.com", testBody)
	msg.Open = func() (io.ReadCloser, error) { return nil, errors.New("spool file missing") }
	want(t, deliver(t, d, msg, "a@example.net")[0], delivery.Deferred, delivery.ReasonLocal)
	if len(s.Messages()) != 0 {
		t.Error("something was sent")
	}
}

func TestTLSVersionIsRecordedAndTheEHLONameIsOursBeforeAndAfterSTARTTLS(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "mx1.example.net", smtpsink.Options{})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].TLSVersion != "TLS 1.3" {
		t.Errorf("TLS version %q", res[0].TLSVersion)
	}
	m := s.Accepted()[0]
	if !m.TLS || m.TLSVersion != tls.VersionTLS13 || m.ServerName != "mx1.example.net" || m.Helo != relayName {
		t.Errorf("sink saw TLS %v version %x SNI %q EHLO %q", m.TLS, m.TLSVersion, m.ServerName, m.Helo)
	}
	tr := s.Conns()[0].Transcript
	if len(tr) != 2 || tr[0] != "EHLO "+relayName || tr[1] != "STARTTLS" {
		t.Errorf("cleartext part of the session: %v", tr)
	}
	if n := e.metric("mailroom_delivery_connections_total", "tls", "TLS 1.3", "verified", "true"); n != 1 {
		t.Errorf("verified TLS 1.3 connections metric = %v", n)
	}
	if n := e.metric("mailroom_delivery_transactions_total", "tls", "TLS 1.3"); n != 1 {
		t.Errorf("TLS transactions metric = %v", n)
	}
	recs := e.Logs.records("delivery attempt")
	if len(recs) != 1 {
		t.Fatalf("%d delivery log records", len(recs))
	}
	for k, v := range map[string]any{"remoteHost": "mx1.example.net", "remoteIP": "127.0.0.2", "tls": "TLS 1.3", "status": "delivered", "rcpt": "a@example.net"} {
		if recs[0][k] != v {
			t.Errorf("log %s = %v, want %v", k, recs[0][k], v)
		}
	}
	if reply, _ := recs[0]["reply"].(string); !strings.HasPrefix(reply, "250 2.0.0 ") {
		t.Errorf("logged reply %q", reply)
	}
}

func TestOpportunisticTLSDoesNotRequireAValidCertificate(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	other := smtpsink.NewCA(t) // a CA the relay does not trust
	s := e.sink("127.0.0.2", smtpsink.Options{TLS: other.ServerTLS(t, "somewhere.else")})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].TLSVersion == "" || !s.Accepted()[0].TLS {
		t.Error("not delivered over TLS")
	}
	if n := e.metric("mailroom_delivery_connections_total", "verified", "false"); n != 1 {
		t.Errorf("unverified connections metric = %v", n)
	}
}

func TestCleartextWhenSTARTTLSIsNotOffered(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{})
	opts := e.options()
	opts.MaxMessagesPerConnection = 1
	d := e.deliverer(opts)

	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].TLSVersion != "" {
		t.Errorf("TLS %q", res[0].TLSVersion)
	}
	// One connection to learn that there is no STARTTLS, one to deliver;
	// the next message goes straight to cleartext.
	if n := len(s.Conns()); n != 2 {
		t.Errorf("%d connections for the first message", n)
	}
	deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	if n := len(s.Conns()); n != 3 {
		t.Errorf("%d connections after the second message, want 3", n)
	}
	for _, c := range s.Conns() {
		if contains(c.Transcript, "EHLO localhost") {
			t.Errorf("introduced itself as localhost: %v", c.Transcript)
		}
	}
}

func TestCleartextWhenTheTLSHandshakeFails(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	// A server that offers STARTTLS but can only do TLS 1.0 with a cipher
	// suite Go's client no longer offers.
	cfg := e.CA.ServerTLS(t, "example.net")
	cfg.MaxVersion = tls.VersionTLS10
	cfg.CipherSuites = []uint16{tls.TLS_RSA_WITH_RC4_128_SHA}
	s := e.sink("127.0.0.2", smtpsink.Options{TLS: cfg})
	d := e.deliverer(e.options())
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].TLSVersion != "" || len(s.Accepted()) != 1 || s.Accepted()[0].TLS {
		t.Errorf("result %+v", res[0])
	}
}

func TestSuppressedRecipientsBounceWithoutAConnection(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"bob@example.net": {Reply: smtpsink.Reply(550, "5.1.1", "<bob@example.net>: User unknown")},
	}}})
	sup, done := openSuppressions(t, t.TempDir(), 24*time.Hour, nil)
	defer done()
	opts := e.options()
	opts.Suppressions = sup
	opts.MaxMessagesPerConnection = 1 // every message needs its own connection
	d := e.deliverer(opts)

	want(t, deliver(t, d, message("noreply@example.com", testBody), "bob@example.net")[0], delivery.Failed, delivery.ReasonUnknownUser)
	entry, ok := sup.Lookup("bob@example.net")
	if !ok || entry.Reply != "550 5.1.1 <bob@example.net>: User unknown" || entry.RemoteHost != "example.net" {
		t.Fatalf("suppression entry %+v, %v", entry, ok)
	}
	conns := len(s.Conns())
	want(t, deliver(t, d, message("noreply@example.com", testBody), "Bob@example.net")[0], delivery.Failed, delivery.ReasonSuppressed)
	if n := len(s.Conns()); n != conns {
		t.Errorf("%d connections for a suppressed recipient", n-conns)
	}

	res := deliver(t, d, message("noreply@example.com", testBody), "Bob@example.net", "alice@example.net")
	want(t, res[0], delivery.Failed, delivery.ReasonSuppressed)
	want(t, res[1], delivery.Delivered, delivery.ReasonNone)
	if !strings.Contains(res[0].Detail, "suppressed") || !strings.Contains(res[0].Detail, "User unknown") {
		t.Errorf("the bounce does not explain itself: %q", res[0].Detail)
	}
	for _, m := range s.Messages() {
		if contains(m.Rcpts, "Bob@example.net") {
			t.Error("a suppressed recipient was sent to")
		}
	}
	if n := e.metric("mailroom_delivery_suppressed_total"); n != 2 {
		t.Errorf("suppressed metric = %v", n)
	}
	if n := e.metric("mailroom_delivery_recipients_total", "status", "bounced", "reason", "suppressed"); n != 2 {
		t.Errorf("bounced/suppressed metric = %v", n)
	}
	if n := len(s.Conns()); n != conns+1 {
		t.Errorf("%d new connections for alice alone, want 1", n-conns)
	}

	if removed, _ := sup.Remove("bob@example.net"); !removed {
		t.Fatal("not removed")
	}
	want(t, deliver(t, d, message("noreply@example.com", testBody), "bob@example.net")[0], delivery.Failed, delivery.ReasonUnknownUser)
}

func TestOutcomeMetrics(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	e.sink("127.0.0.2", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"b@example.net": {Reply: smtpsink.Reply(550, "5.1.1", "unknown")},
		"c@example.net": {Reply: smtpsink.Reply(451, "4.3.0", "later")},
	}}})
	d := e.deliverer(e.options())
	deliver(t, d, message("noreply@example.com", testBody), "a@example.net", "b@example.net", "c@example.net")
	for _, tc := range []struct {
		status, reason string
	}{{"delivered", ""}, {"bounced", "unknown_user"}, {"deferred", "recipient"}} {
		if n := e.metric("mailroom_delivery_recipients_total", "status", tc.status, "reason", tc.reason); n != 1 {
			t.Errorf("%s/%s = %v", tc.status, tc.reason, n)
		}
	}
	if n := e.metric("mailroom_delivery_latency_seconds"); n != 1 {
		t.Errorf("latency observations = %v", n)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestIdleConnectionsAreClosedAfterTheIdleTimeout(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "example.net", smtpsink.Options{})
	opts := e.options()
	opts.IdleTimeout = 200 * time.Millisecond
	d := e.deliverer(opts)
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	eventually(t, "the idle connection to be closed", func() bool { return s.Active() == 0 && len(d.Destinations()) == 0 })
	if n := e.metric("mailroom_delivery_open_connections"); n != 0 {
		t.Errorf("open connections gauge = %v", n)
	}
}

func TestThePolicyHostIsFoundThroughTheConfiguredResolvers(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	e.DNS.Add(t, "mta-sts.example.net. 300 IN A 127.0.0.2", "mta-sts.example.net. 300 IN A 127.0.0.3")
	e.refuse("127.0.0.2")
	ln := e.lns["127.0.0.3"]
	accepted := make(chan string, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c.LocalAddr().String()
			c.Close()
		}
	}()
	d := e.deliverer(e.options())
	c, err := delivery.DialViaResolver(d, context.Background(), "tcp", "mta-sts.example.net:"+itoa(e.Port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := <-accepted; got != "127.0.0.3:"+itoa(e.Port) {
		t.Errorf("reached %s", got)
	}
}
