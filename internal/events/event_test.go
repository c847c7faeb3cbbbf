package events

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
)

// classified is r with the class the deliverer gives it.
func classified(r delivery.Result) delivery.Result {
	r.Class = delivery.ClassOf(r)
	return r
}

func TestAnOutcomesEventCarriesItsBounceClassAndType(t *testing.T) {
	m := &queue.Message{ID: "Q1", MessageID: "<m1@shop.example.com>", Origin: "user:shop"}
	reply := func(code int, enh, text string) delivery.Reply {
		return delivery.Reply{Code: code, Enhanced: enh, Text: text}
	}
	for _, tc := range []struct {
		name     string
		r        delivery.Result
		typ      Type
		class    string
		severity string
	}{
		{"delivered", delivery.Result{Status: delivery.Delivered, Code: "2.0.0", Reply: reply(250, "2.0.0", "OK")},
			Delivered, "", ""},
		{"unknown user is a hard bounce", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonUnknownUser, Code: "5.1.1",
			Reply: reply(550, "5.1.1", "The email account that you tried to reach does not exist.")},
			Bounced, "invalid_recipient", Hard},
		{"a permanent mailbox-full reply is a soft bounce", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonRecipient, Code: "5.2.2",
			Reply: reply(552, "5.2.2", "The email account that you tried to reach is over quota.")},
			Bounced, "mailbox_full", Soft},
		{"a policy block is hard", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonMessage, Code: "5.7.1",
			Reply: reply(550, "5.7.1", "Message rejected as spam")},
			Bounced, "policy", Hard},
		{"a deferral has a class and no bounce type", delivery.Result{Status: delivery.Deferred, Reason: delivery.ReasonRecipient, Code: "4.7.0",
			Reply: reply(421, "4.7.0", "Try again later, closing connection. (throttled)")},
			Deferred, "throttled", ""},
		{"a suppressed address is a hard invalid recipient", delivery.Result{Status: delivery.Failed, Reason: delivery.ReasonSuppressed, Code: "5.1.1"},
			Suppressed, "invalid_recipient", Hard},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.Recipient = "ann@example.net"
			e := ForResult(m, classified(tc.r), 2, t0)
			if e.Type != tc.typ || e.BounceClass != tc.class || e.BounceType != tc.severity {
				t.Errorf("event type %q class %q bounce type %q, want %q %q %q", e.Type, e.BounceClass, e.BounceType, tc.typ, tc.class, tc.severity)
			}
			if e.QueueID != "Q1" || e.MessageID != m.MessageID || e.Credential != "shop" || e.Attempt != 2 || e.Recipient != "ann@example.net" {
				t.Errorf("event fields %+v", e)
			}
		})
	}
}

func TestQueuedEventsAreCountedOnlyOnceTheirBatchCommitted(t *testing.T) {
	rcv := newReceiver(t, always(200))
	f := newFixture(t, hookConfig(rcv.URL, newSecret(t), []string{"127.0.0.1/32"}, time.Hour), Options{})
	m := &queue.Message{ID: "Q1", Origin: "user:shop.shop", ReceivedAt: t0,
		Recipients: []queue.Recipient{{Address: "ann@example.net"}, {Address: "bob@example.net"}}}
	recs, committed := f.d.Queued(m)
	if len(recs) != 4 { // per recipient: the event log and the webhook's pending record
		t.Fatalf("%d records for two recipients' queued events, want 4", len(recs))
	}
	counted := func() float64 { return testutil.ToFloat64(f.d.m.events.WithLabelValues("shop.shop", string(Queued))) }
	if n := counted(); n != 0 {
		t.Fatalf("queued events counted before their commit: %v", n)
	}
	committed()
	if n := counted(); n != 2 {
		t.Fatalf("queued events after the commit: %v, want 2", n)
	}
}
