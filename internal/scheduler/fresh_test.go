package scheduler_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/queue"
)

// A message committed while the scheduler runs gets its attempt's lease in
// its own intake commit and goes straight to a worker.
func TestAFreshMessageIsLeasedInItsIntakeCommit(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.run()
	release := e.fake.hold()
	defer release()
	id := e.enqueue("app@example.com", "fresh@example.org")
	if got := <-e.fake.started; got != id {
		t.Fatalf("attempt started for %s, want %s", got, id)
	}
	m := e.get(id)
	if want := t0.Add(10 * time.Minute); !m.NextAttempt.Equal(want) || m.LeaseUntil.IsZero() {
		t.Fatalf("during the attempt: next %s, lease %s; want next %s (the first retry step) and a lease", m.NextAttempt, m.LeaseUntil, want)
	}
	if n := e.metric("mailroom_scheduler_intake_leases_total", nil); n != 1 {
		t.Fatalf("intake leases %v, want 1", n)
	}
	release()
	eventually(t, "the fresh message is delivered", func() bool { return e.gone(id) })
	if c := e.fake.callsFor(id); len(c) != 1 {
		t.Fatalf("delivered %d times, want once", len(c))
	}
}

// The point of the intake lease: a message delivered at once costs two
// synced writes (its commit and its removal), not three.
func TestAFreshMessageCostsTwoSyncedWrites(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.run()
	e.settle()
	before := e.q.SyncedCommits()
	id := e.enqueue("app@example.com", "fresh@example.org")
	eventually(t, "the fresh message is delivered", func() bool { return e.gone(id) })
	if n := e.q.SyncedCommits() - before; n != 2 {
		t.Fatalf("%d synced writes for one message delivered at once, want 2 (commit with lease, removal)", n)
	}
}

// A message enqueued while delivery is paused is not leased at intake: it
// is due at once when delivery resumes.
func TestAMessageQueuedWhilePausedIsDueAtOnce(t *testing.T) {
	e := newEnv(t, defaultRetry())
	id := e.enqueue("app@example.com", "paused@example.org")
	if m := e.get(id); !m.NextAttempt.IsZero() || !m.LeaseUntil.IsZero() {
		t.Fatalf("leased while paused: next %s, lease %s", m.NextAttempt, m.LeaseUntil)
	}
	e.run()
	eventually(t, "delivery after resuming", func() bool { return e.gone(id) })
}

// A crash during a fresh message's attempt leaves it due at its lease's
// next attempt, not at once: the lease was in the commit batch. The crash
// is a copy of the spool taken while the attempt hangs: what a kill -9 at
// that moment would leave on disk.
func TestACrashDuringAFreshAttemptLeavesTheMessageDueAtItsLease(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.run()
	release := e.fake.hold()
	defer release()
	id := e.enqueue("app@example.com", "crash@example.org")
	<-e.fake.started
	crashed := filepath.Join(t.TempDir(), "queue")
	if out, err := exec.Command("cp", "-a", filepath.Join(e.dir, "queue"), crashed).CombinedOutput(); err != nil {
		t.Fatalf("copying the spool: %v: %s", err, out)
	}
	os.Remove(filepath.Join(crashed, "LOCK"))
	q, err := queue.Open(crashed, queue.Options{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	m, ok := q.Get(id)
	if !ok {
		t.Fatal("the message acknowledged before the crash is gone")
	}
	if want := t0.Add(10 * time.Minute); !m.NextAttempt.Equal(want) {
		t.Fatalf("after the crash the message is due at %s, want %s (its lease's next attempt)", m.NextAttempt, want)
	}
	if n := q.DueCount(t0.Add(time.Minute), 10); n != 0 {
		t.Fatalf("%d messages due a minute after the crash, want 0", n)
	}
}

// Fresh messages of a destination at its connection cap wait in memory,
// leased, without holding a worker: another destination's message starts
// at once, and the waiting ones are delivered, once each, as slots free.
func TestFreshMessagesOfABusyDestinationWaitWithoutHoldingAWorker(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.run()
	release := e.fake.hold()
	defer release()
	var busy []string
	for range 15 {
		busy = append(busy, e.enqueue("app@example.com", "u@busy.example"))
	}
	for range 10 { // the default per-destination cap
		<-e.fake.started
	}
	other := e.enqueue("app@example.com", "u@other.example")
	if got := <-e.fake.started; got != other {
		t.Fatalf("started %s, want the other destination's message %s", got, other)
	}
	for _, id := range busy {
		if m := e.get(id); m.LeaseUntil.IsZero() || !m.NextAttempt.Equal(t0.Add(10*time.Minute)) {
			t.Fatalf("message %s of the busy destination is not leased: next %s, lease %s", id, m.NextAttempt, m.LeaseUntil)
		}
	}
	if n := e.metric("mailroom_scheduler_intake_leases_total", nil); n != 16 {
		t.Fatalf("intake leases %v, want 16", n)
	}
	release()
	eventually(t, "every message is delivered", func() bool {
		for _, id := range append(busy, other) {
			if !e.gone(id) {
				return false
			}
		}
		return true
	})
	for _, id := range append(busy, other) {
		if c := e.fake.callsFor(id); len(c) != 1 {
			t.Fatalf("%s delivered %d times, want once", id, len(c))
		}
	}
}

// A message still waiting for a slot at shutdown is due at once after the
// restart, not only at its lease's next attempt.
func TestAMessageWaitingAtShutdownIsDueAtOnceAfterTheRestart(t *testing.T) {
	e := newEnv(t, defaultRetry())
	e.run()
	release := e.fake.hold()
	var cut []string
	for range 10 {
		cut = append(cut, e.enqueue("app@example.com", "u@busy.example"))
	}
	for range 10 {
		<-e.fake.started
	}
	waiting := e.enqueue("app@example.com", "u@busy.example")
	all := append(cut, waiting)
	e.close() // cuts off the ten attempts in progress
	release()
	e.open()
	for _, id := range all {
		if m := e.get(id); !m.NextAttempt.IsZero() {
			t.Fatalf("after a clean shutdown %s is due at %s, want at once", id, m.NextAttempt)
		}
	}
	e.run()
	// All eleven are due at once for one destination with ten slots, so
	// one of them may be moved a few milliseconds ahead (postponeBusy):
	// the test clock moves on while the test waits.
	eventually(t, "all eleven are delivered after the restart", func() bool {
		for _, id := range all {
			if !e.gone(id) {
				e.clock.Advance(10 * time.Millisecond)
				e.s.Wake()
				return false
			}
		}
		return true
	})
	if c := e.fake.callsFor(waiting); len(c) != 1 {
		t.Fatalf("the waiting message was delivered %d times, want once", len(c))
	}
}
