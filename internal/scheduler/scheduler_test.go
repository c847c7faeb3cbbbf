package scheduler_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/bounce"
	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/scheduler"
)

func TestDueMessagesAreAttemptedAndOthersWaitForTheirTime(t *testing.T) {
	e := newEnv(t, defaultRetry())
	due := e.enqueue("app@example.com", "due@example.org")
	later := e.enqueue("app@example.com", "later@example.org")
	e.edit(later, func(m *queue.Message) { m.NextAttempt = t0.Add(time.Hour) })
	e.run()
	e.settle()

	if !e.gone(due) || len(e.fake.callsFor(due)) != 1 {
		t.Errorf("the due message was not delivered once: calls %v", e.fake.callsFor(due))
	}
	if c := e.fake.callsFor(later); len(c) != 0 {
		t.Fatalf("a message due in an hour was attempted now: %v", c)
	}

	e.clock.Advance(time.Hour)
	e.s.Wake()
	eventually(t, "the later message is delivered at its time", func() bool { return e.gone(later) })
}

func TestEachRecipientsOutcomeIsKeptInTheQueue(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("deferred@example.org", tempFail, ok)
	e.fake.answer("failed@example.org", permFail)
	id := e.enqueue("app@example.com", "delivered@example.org", "deferred@example.org", "failed@example.org")
	e.run()
	e.settle()

	m := e.get(id)
	want := map[string]string{"delivered@example.org": scheduler.StateDelivered, "deferred@example.org": scheduler.StatePending,
		"failed@example.org": scheduler.StateFailed}
	for _, r := range m.Recipients {
		if r.State != want[r.Address] {
			t.Errorf("%s: state %q, want %q", r.Address, r.State, want[r.Address])
		}
		if r.Attempts != 1 || !r.LastAttempt.Equal(t0) {
			t.Errorf("%s: attempts %d at %s, want 1 at %s", r.Address, r.Attempts, r.LastAttempt, t0)
		}
	}
	if r := m.Recipients[1]; !strings.Contains(r.LastResponse, "451 4.3.0 try again later") {
		t.Errorf("the deferred recipient's last response is %q", r.LastResponse)
	}
	if m.Attempts != 1 || !m.NextAttempt.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("message attempts %d, next %s; want 1 and the first schedule step (%s)", m.Attempts, m.NextAttempt, t0.Add(10*time.Minute))
	}
	if len(m.History) != 3 || m.History[0].Host != "mx.example.net" || m.History[2].Code != "5.1.1" {
		t.Errorf("history %+v, want one entry per recipient with host and code", m.History)
	}
	dsns := e.fake.dsnsTo("app@example.com")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs to the sender, want one failure DSN", len(dsns))
	}
	body := dsns[0].data
	if !strings.Contains(body, "Final-Recipient: rfc822; failed@example.org") || !strings.Contains(body, "Action: failed") ||
		strings.Contains(body, "deferred@example.org") || strings.Contains(body, "Final-Recipient: rfc822; delivered@example.org") {
		t.Errorf("the DSN must list exactly the failed recipient:\n%s", body)
	}

	// The next attempt, at its time, is for the pending recipient only;
	// with it delivered the message is finished and forgotten.
	e.clock.Advance(10 * time.Minute)
	e.s.Wake()
	eventually(t, "the message is finished", func() bool { return e.gone(id) })
	calls := e.fake.callsFor(id)
	if len(calls) != 2 || strings.Join(calls[1].rcpts, ",") != "deferred@example.org" {
		t.Errorf("second attempt went to %v, want only the deferred recipient", calls[len(calls)-1].rcpts)
	}
	if n := e.metric("mailroom_queue_recipients_finished_total", map[string]string{"status": "delivered"}); n < 2 {
		t.Errorf("finished delivered = %v, want at least the 2 recipients", n)
	}
}

func TestTheFailureDSNIsWrittenBeforeTheOriginalsNewState(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("failed@example.org", permFail)
	id := e.enqueue("app@example.com", "failed@example.org", "ok@example.org")
	// DSNs cannot be written (the space left is below their reserve, not
	// below that of state writes): the failure must not become final
	// without its DSN.
	e.free.Store(uint64(e.q.LogRoom() + 400<<10))
	e.run()
	eventually(t, "the message is attempted", func() bool { return len(e.fake.callsFor(id)) == 1 && e.get(id).Recipients[1].State != "" })
	m := e.get(id)
	if m.Recipients[0].State != scheduler.StatePending || m.Recipients[1].State != scheduler.StateDelivered {
		t.Fatalf("with the DSN unwritable, the failed recipient is %q (want pending, to fail again with its DSN)", m.Recipients[0].State)
	}
	if e.metric("mailroom_dsn_queued_total", map[string]string{"action": "failed"}) != 0 {
		t.Fatal("a DSN was counted as queued")
	}
	// Space back: the next attempt fails again, and now the DSN goes first.
	e.free.Store(1 << 40)
	e.clock.Advance(time.Hour)
	e.s.Wake()
	eventually(t, "the message is finished with its DSN", func() bool { return e.gone(id) && len(e.fake.dsnsTo("app@example.com")) == 1 })
}

func TestAFailedStateWriteParksTheMessageInsteadOfRedeliveringIt(t *testing.T) {
	e := newEnv(t, defaultRetry())
	id := e.enqueue("app@example.com", "slow@example.org")
	release := e.fake.hold()
	e.run()
	<-e.fake.started
	// The lease is on disk: the message is not due before its next attempt.
	if m := e.get(id); !m.NextAttempt.After(t0) || m.LeaseUntil.IsZero() {
		t.Fatalf("no lease written before the attempt: %+v", m)
	}
	// Now no write succeeds (below every reserve), and the delivery ends.
	e.free.Store(0)
	release()
	eventually(t, "the outcome write fails", func() bool {
		return e.metric("mailroom_queue_state_write_failures_total", map[string]string{"write": "outcome"}) >= 2
	})
	if n := e.metric("mailroom_queue_parked_messages", nil); n != 1 {
		t.Fatalf("parked gauge %v, want 1", n)
	}
	for i := 0; i < 20; i++ {
		e.s.Wake()
		e.clock.Advance(time.Second)
	}
	if c := e.fake.callsFor(id); len(c) != 1 {
		t.Fatalf("a message whose outcome could not be written was delivered %d times", len(c))
	}
	e.free.Store(1 << 40)
	eventually(t, "the parked outcome is written", func() bool { return e.gone(id) })
	if c := e.fake.callsFor(id); len(c) != 1 {
		t.Fatalf("delivered %d times, want once", len(c))
	}
	eventually(t, "the parked gauge back at 0", func() bool { return e.metric("mailroom_queue_parked_messages", nil) == 0 })
}

func TestTheDelayWarningIsSentOnceAndSurvivesARestart(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("slow@example.org", tempFail)
	id := e.enqueue("app@example.com", "slow@example.org")
	e.run()
	e.settle()
	if n := len(e.fake.dsnsTo("app@example.com")); n != 0 {
		t.Fatalf("%d DSNs after the first deferral; the warning is due only after 4h", n)
	}

	e.clock.Advance(5 * time.Hour)
	e.s.Wake()
	e.settle()
	if !e.get(id).DelayWarned {
		t.Fatal("the message is not marked as warned")
	}
	dsns := e.fake.dsnsTo("app@example.com")
	if len(dsns) != 1 || !strings.Contains(dsns[0].data, "Action: delayed") || !strings.Contains(dsns[0].data, "Will-Retry-Until:") {
		t.Fatalf("want one delayed DSN with Will-Retry-Until, got %d: %v", len(dsns), dsns)
	}

	e.restart()
	e.run()
	for range 3 {
		e.clock.Advance(time.Hour)
		e.s.Wake()
		e.settle()
	}
	if got := e.get(id).Attempts; got != 5 {
		t.Fatalf("attempts %d, want 5", got)
	}
	if n := len(e.fake.dsnsTo("app@example.com")); n != 1 {
		t.Errorf("%d DSNs to the sender after more deferrals and a restart, want still 1", n)
	}
}

func TestAMessageThatOutlivesMaxAgeFailsWithADSN(t *testing.T) {
	retry := defaultRetry()
	retry.MaxAge, retry.DelayWarningAfter = 2*time.Hour, 0
	e := newEnv(t, retry)
	e.fake.answer("slow@example.org", tempFail)
	id := e.enqueue("app@example.com", "slow@example.org")
	e.run()
	e.settle()
	for e.clock.Now().Before(t0.Add(2 * time.Hour)) {
		if e.gone(id) {
			t.Fatalf("the message ended before maxAge, at %s", e.clock.Now())
		}
		e.clock.Advance(time.Hour)
		e.s.Wake()
		e.settle()
	}
	if !e.gone(id) {
		t.Fatalf("the message is still queued after maxAge: %+v", e.get(id))
	}
	dsns := e.fake.dsnsTo("app@example.com")
	if len(dsns) != 1 || !strings.Contains(dsns[0].data, "Status: 5.4.7") || !strings.Contains(dsns[0].data, "451 4.3.0 try again later") {
		t.Fatalf("want one failure DSN with 5.4.7 and the last reply, got %v", dsns)
	}
	if n := e.metric("mailroom_queue_recipients_finished_total", map[string]string{"status": "bounced", "reason": "expired"}); n != 1 {
		t.Errorf("finished bounced/expired = %v, want 1", n)
	}
}

func TestAnExpiredMessagesDSNSaysWhatKeptFailing(t *testing.T) {
	retry := defaultRetry()
	retry.MaxAge, retry.DelayWarningAfter = 2*time.Hour, 0
	e := newEnv(t, retry)
	e.fake.answer("full@example.org", outcome{delivery.Deferred, 452, "4.2.2 mailbox full"})
	id := e.enqueue("app@example.com", "full@example.org")
	e.run()
	e.settle()
	for !e.gone(id) && e.clock.Now().Before(t0.Add(4*time.Hour)) {
		e.clock.Advance(time.Hour)
		e.s.Wake()
		e.settle()
	}
	dsns := e.fake.dsnsTo("app@example.com")
	if len(dsns) != 1 || !strings.Contains(dsns[0].data, "Status: 5.4.7") ||
		!strings.Contains(dsns[0].data, bounce.Class{Kind: bounce.MailboxFull}.Sentence()) {
		t.Fatalf("want one failure DSN with 5.4.7 saying the mailbox was full, got %v", dsns)
	}
}

func TestAFailedMessageFromTheNullSenderCausesNoDSN(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("gone@example.org", permFail)
	id := e.enqueue("", "gone@example.org")
	e.run()
	e.settle()
	if !e.gone(id) {
		t.Fatal("the failed bounce is still queued")
	}
	if n := e.metric("mailroom_dsn_queued_total", nil); n != 0 {
		t.Errorf("%v DSNs queued for a message from <>", n)
	}
	if n := e.metric("mailroom_dsn_dropped_total", nil); n != 1 {
		t.Errorf("dsn_dropped = %v, want 1", n)
	}
}

func TestHoldDuringAnAttemptIsKeptAndReleaseResumesTheSchedule(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("slow@example.org", tempFail)
	id := e.enqueue("app@example.com", "slow@example.org")
	release := e.fake.hold()
	defer release()
	e.run()
	<-e.fake.started
	if err := e.s.Hold(id); err != nil {
		t.Fatal(err)
	}
	release()
	eventually(t, "the attempt is recorded", func() bool { return e.get(id).Attempts == 1 })
	if m := e.get(id); !m.Held {
		t.Fatal("the attempt's outcome overwrote the hold")
	}

	e.clock.Advance(2 * time.Hour) // well past the next attempt time
	e.s.Wake()
	e.settle()
	if n := len(e.fake.callsFor(id)); n != 1 {
		t.Fatalf("a held message was attempted again (%d attempts)", n)
	}
	if got := e.s.List(scheduler.Filter{State: scheduler.StateHeld}); len(got) != 1 || got[0].ID != id {
		t.Errorf("list of held messages: %v", got)
	}

	if err := e.s.Release(id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the released message is attempted again", func() bool { return len(e.fake.callsFor(id)) == 2 })
}

func TestRetryNowMakesADeferredOrHeldMessageDueAtOnce(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("slow@example.org", tempFail, tempFail, ok)
	id := e.enqueue("app@example.com", "slow@example.org")
	e.run()
	e.settle()
	if m := e.get(id); !m.NextAttempt.After(e.clock.Now()) {
		t.Fatalf("not deferred: %+v", m)
	}
	if err := e.s.RetryNow(id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the second attempt", func() bool { return e.get(id).Attempts == 2 })

	if err := e.s.Hold(id); err != nil {
		t.Fatal(err)
	}
	if err := e.s.RetryNow(id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the held message is retried and delivered", func() bool { return e.gone(id) })
	if err := e.s.RetryNow(id); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("RetryNow of a finished message: %v, want ErrNotFound", err)
	}
}

func TestDeleteDuringAnAttemptIsNotUndoneByItsOutcome(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("slow@example.org", tempFail)
	id := e.enqueue("app@example.com", "slow@example.org")
	release := e.fake.hold()
	defer release()
	e.run()
	<-e.fake.started
	if err := e.s.Delete(id, false); err != nil {
		t.Fatal(err)
	}
	release()
	e.settle()
	if !e.gone(id) {
		t.Fatalf("the deleted message came back: %+v", e.get(id))
	}
	if n := len(e.fake.dsnsTo("app@example.com")); n != 0 {
		t.Errorf("%d DSNs after a silent delete", n)
	}
}

func TestDeleteWithBounceReportsThePendingRecipients(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("slow@example.org", tempFail)
	id := e.enqueue("app@example.com", "done@example.org", "slow@example.org")
	e.run()
	e.settle()
	if err := e.s.Delete(id, true); err != nil {
		t.Fatal(err)
	}
	if !e.gone(id) {
		t.Fatal("still queued after delete")
	}
	e.settle()
	dsns := e.fake.dsnsTo("app@example.com")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want one", len(dsns))
	}
	body := dsns[0].data
	if !strings.Contains(body, "Final-Recipient: rfc822; slow@example.org") || strings.Contains(body, "Final-Recipient: rfc822; done@example.org") ||
		!strings.Contains(body, "deleted from the queue") {
		t.Errorf("the DSN must report only the pending recipient as deleted:\n%s", body)
	}
	if n := e.metric("mailroom_queue_recipients_finished_total", map[string]string{"status": "bounced", "reason": "deleted"}); n != 1 {
		t.Errorf("finished bounced/deleted = %v, want 1", n)
	}
	if err := e.s.Delete(id, true); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("deleting twice: %v, want ErrNotFound", err)
	}
}

func TestARestartResumesTheScheduleFromTheQueue(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("slow@example.org", tempFail, ok)
	id := e.enqueue("app@example.com", "slow@example.org")
	held := e.enqueue("app@example.com", "held@example.org")
	e.edit(held, func(m *queue.Message) { m.Held = true })
	e.run()
	e.settle()

	e.restart()
	e.run()
	e.clock.Advance(5 * time.Minute)
	e.s.Wake()
	e.settle()
	if n := len(e.fake.callsFor(id)); n != 1 {
		t.Fatalf("attempted %d times before its next attempt time after a restart, want 1", n)
	}
	if m := e.get(held); !m.Held || len(e.fake.callsFor(held)) != 0 {
		t.Fatal("the hold did not survive the restart")
	}
	e.clock.Advance(5 * time.Minute)
	e.s.Wake()
	eventually(t, "delivery at the scheduled time", func() bool { return e.gone(id) })
}

func TestShutdownCutsOffAttemptsWithoutCountingThem(t *testing.T) {
	e := newEnv(t, defaultRetry())
	id := e.enqueue("app@example.com", "stalled@example.org")
	release := e.fake.hold()
	defer release()
	e.run()
	<-e.fake.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown with an attempt in progress at the deadline: %v", err)
	}
	m := e.get(id)
	if m.Attempts != 0 || m.Recipients[0].Attempts != 0 || !m.NextAttempt.IsZero() || len(m.History) != 0 {
		t.Fatalf("a cut-off attempt was counted: %+v", m)
	}

	release()
	e.restart()
	e.run()
	eventually(t, "delivery after the restart", func() bool { return e.gone(id) })
}

func TestQueueGaugesCountMessagesByStateAndTheOldestAge(t *testing.T) {
	e := newEnv(t, defaultRetry())
	oldest := e.enqueue("app@example.com", "held@example.org")
	e.edit(oldest, func(m *queue.Message) { m.Held = true })
	e.clock.Advance(time.Minute)
	deferred := e.enqueue("app@example.com", "deferred@example.org")
	e.edit(deferred, func(m *queue.Message) { m.NextAttempt = t0.Add(time.Hour) })
	e.enqueue("app@example.com", "due@example.org")
	e.clock.Advance(time.Minute)

	for state, want := range map[string]float64{"active": 1, "deferred": 1, "held": 1} {
		if got := e.metric("mailroom_queue_messages", map[string]string{"state": state}); got != want {
			t.Errorf("mailroom_queue_messages{state=%q} = %v, want %v", state, got, want)
		}
	}
	if got := e.metric("mailroom_queue_oldest_message_age_seconds", nil); got != 120 {
		t.Errorf("oldest age %vs, want 120s", got)
	}

	if err := e.s.Delete(oldest, false); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Delete(deferred, false); err != nil {
		t.Fatal(err)
	}
	e.run()
	e.settle()
	if got := e.metric("mailroom_queue_oldest_message_age_seconds", nil); got != 0 {
		t.Errorf("oldest age of an empty queue = %v, want 0", got)
	}
	for _, state := range []string{"active", "deferred", "held"} {
		if got := e.metric("mailroom_queue_messages", map[string]string{"state": state}); got != 0 {
			t.Errorf("empty queue: mailroom_queue_messages{state=%q} = %v", state, got)
		}
	}
}

func TestAPassThatSkipsServersKnownDownIsNoAttemptAndKeepsTheSchedule(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.fake.answer("u@down.example", tempFail)
	id := e.enqueue("app@example.com", "u@down.example")
	e.run()
	eventually(t, "the first attempt", func() bool { return e.get(id).Attempts == 1 })
	first := e.get(id)
	if !first.Recipients[0].LastAttempt.Equal(t0) || !first.NextAttempt.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("after the first attempt: %+v", first)
	}

	// At its next attempt every server is remembered as down for 3 more
	// minutes: nothing is tried, so it is no attempt, and the message is
	// due again when the servers may be tried, not a schedule step later.
	e.fake.mu.Lock()
	e.fake.down["u@down.example"] = t0.Add(13 * time.Minute)
	e.fake.mu.Unlock()
	e.clock.Advance(10 * time.Minute)
	e.s.Wake()
	eventually(t, "the skipped pass", func() bool { return len(e.fake.callsFor(id)) == 2 && e.get(id).LeaseUntil.IsZero() })
	m := e.get(id)
	if m.Attempts != 1 || m.Recipients[0].Attempts != 1 || !m.Recipients[0].LastAttempt.Equal(t0) {
		t.Fatalf("a pass that tried no server counted as an attempt: %+v", m)
	}
	if !m.NextAttempt.Equal(t0.Add(13 * time.Minute)) {
		t.Fatalf("next attempt %s, want %s (when the servers may be tried again)", m.NextAttempt, t0.Add(13*time.Minute))
	}

	// It expires while the servers are down: the failure DSN's
	// Last-Attempt-Date is the last real attempt (t0), not the skip.
	e.edit(id, func(m *queue.Message) { m.NextAttempt = t0.Add(24 * time.Hour) })
	e.fake.mu.Lock()
	e.fake.down["u@down.example"] = t0.Add(48 * time.Hour)
	e.fake.mu.Unlock()
	e.clock.Advance(24*time.Hour - 10*time.Minute)
	e.s.Wake()
	eventually(t, "the message expires with a DSN", func() bool { return e.gone(id) && len(e.fake.dsnsTo("app@example.com")) == 1 })
	body := e.fake.dsnsTo("app@example.com")[0].data
	want := "Last-Attempt-Date: " + t0.Format(time.RFC1123Z)
	if !strings.Contains(body, want) {
		t.Fatalf("the DSN does not carry %q:\n%s", want, body)
	}
}

func TestDSNsAreSignedWhenTheRelayHoldsAKey(t *testing.T) {
	var signed [][]byte
	var mu sync.Mutex
	e := newEnvWith(t, defaultRetry(), func(msg []byte) (string, error) {
		mu.Lock()
		signed = append(signed, msg)
		mu.Unlock()
		return "DKIM-Signature: v=1; d=relay.test; s=test; b=fake\r\n", nil
	})
	e.fake.answer("gone@example.org", permFail)
	e.enqueue("app@example.com", "gone@example.org")
	e.run()
	eventually(t, "the DSN is delivered", func() bool { return len(e.fake.dsnsTo("app@example.com")) == 1 })
	d := e.fake.dsnsTo("app@example.com")[0].data
	if !strings.HasPrefix(d, "DKIM-Signature: v=1; d=relay.test;") {
		t.Fatalf("the DSN is not delivered with the signature first:\n%.300s", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(signed) != 1 || !strings.HasSuffix(d, string(signed[0])) {
		t.Fatalf("signed %d reports; the signed bytes must be the report as delivered", len(signed))
	}
}
