package queue

import (
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// An Idempotency-Key answer committed with its message is there after the
// queue is reopened, only for the principal that stored it, until 24 h
// have passed; then pruning deletes it.
func TestAPIIdempotencyAnswerIsCommittedWithTheMessageAndExpires(t *testing.T) {
	dir := t.TempDir()
	clk := clocktesting.NewFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clk.Now() }
	q := openQueue(t, dir, Options{Now: now})

	w, err := q.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	ans := APIAnswer{BodyHash: "h1", ID: w.ID(), MsgID: "m@example.com", At: now()}
	if err := w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}},
		APIIdempotencyRecord("user:app", "key-1", ans)); err != nil {
		t.Fatal(err)
	}
	// A writer aborted with no commit stores no answer.
	w2, _ := q.NewWriter()
	w2.Abort()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = openQueue(t, dir, Options{Now: now})
	defer q.Close()
	got, ok, err := q.APIIdempotency("user:app", "key-1")
	if err != nil || !ok {
		t.Fatalf("APIIdempotency after reopen = %v, %v; want the stored answer", ok, err)
	}
	if got.ID != ans.ID || got.BodyHash != "h1" || got.MsgID != "m@example.com" {
		t.Errorf("answer = %+v, want %+v", got, ans)
	}
	if _, ok, _ := q.APIIdempotency("user:other", "key-1"); ok {
		t.Error("another principal's lookup of the same key found the answer")
	}
	if n, err := q.PruneAPIIdempotency(100); err != nil || n != 0 {
		t.Errorf("PruneAPIIdempotency before expiry = %d, %v; want 0", n, err)
	}

	mu.Lock()
	clk.Step(APIIdempotencyTTL)
	mu.Unlock()
	if _, ok, _ := q.APIIdempotency("user:app", "key-1"); ok {
		t.Error("answer still returned 24 h after it was stored")
	}
	if n, err := q.PruneAPIIdempotency(100); err != nil || n != 1 {
		t.Errorf("PruneAPIIdempotency after expiry = %d, %v; want 1", n, err)
	}
	// The message itself is not touched by pruning.
	if _, ok := q.Get(ans.ID); !ok {
		t.Error("pruning an answer removed its message")
	}
}
