package queue

import (
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAnOldFormatSpoolIsRefusedWithAClearMessage(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "segments"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "segments", "0000000000000001.seg"), []byte("MRQSEG1\n\x01\x00\x00\x00\x00\x00\x00\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrOldFormat) || !strings.Contains(err.Error(), "segment") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open of a segment-log spool: %v; want ErrOldFormat naming the directory", err)
	}
}

func TestDueIndexFindsDueWorkInOrderWithALimit(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var ids []string
	for i := 0; i < 5; i++ {
		id := enqueue(t, q, message(100, "d"), "r@example.net")
		m, _ := q.Get(id)
		m.NextAttempt = t0.Add(time.Duration(4-i) * time.Minute)
		if err := q.Update(m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	held, _ := q.Get(ids[4])
	held.Held = true
	if err := q.Update(held); err != nil {
		t.Fatal(err)
	}
	due, next, err := q.DueBefore(t0.Add(2*time.Minute), Due{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	// ids[4] (t0) is held; ids[3] (t0+1m) and ids[2] (t0+2m) are due.
	if len(due) != 2 || due[0].ID != ids[3] || due[1].ID != ids[2] || !next.Equal(t0.Add(3*time.Minute)) {
		t.Fatalf("due %v next %v; want %s, %s and next at +3m", due, next, ids[3], ids[2])
	}
	due, next, _ = q.DueBefore(t0.Add(time.Hour), Due{}, 1)
	if len(due) != 1 || !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("with limit 1: %v, next %v (want next = now: more are due)", due, next)
	}
	due, _, _ = q.DueBefore(t0.Add(time.Hour), due[0], 10)
	if len(due) != 3 {
		t.Fatalf("paging on from the first: %v", due)
	}
	n := 0
	q.ForDestination("EXAMPLE.net", func(string) bool { n++; return true })
	if n != 5 {
		t.Fatalf("destination index lists %d messages for example.net, want 5", n)
	}
	m, _ := q.Get(ids[0])
	m.Recipients[0].State = "delivered"
	q.Update(m)
	n = 0
	q.ForDestination("example.net", func(string) bool { n++; return true })
	if n != 4 {
		t.Fatalf("a delivered recipient stays in the destination index (%d)", n)
	}
	for _, id := range ids {
		if err := q.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	if due, next, _ := q.DueBefore(t0.Add(time.Hour), Due{}, 10); len(due) != 0 || !next.IsZero() || q.Len() != 0 || q.HeldLen() != 0 {
		t.Fatalf("after removing everything: due %v next %v len %d held %d", due, next, q.Len(), q.HeldLen())
	}
}

func TestACorruptBodyIsQuarantinedAndReportedByID(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{InlineLimit: 1024})
	big := enqueue(t, q, message(5000, "big"), "r@example.net")
	ok := enqueue(t, q, message(500, "ok"), "r@example.net")
	q.Close()
	// Flip one byte of the body file.
	path := filepath.Join(dir, "bodies", big)
	b, _ := os.ReadFile(path)
	b[100] ^= 0x20
	os.WriteFile(path, b, 0o600)

	q = openQueue(t, dir, Options{InlineLimit: 1024})
	defer q.Close()
	r, err := q.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(r)
	r.Close()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading a corrupt body: %v, want ErrCorrupt", err)
	}
	if _, found := q.Get(big); found || q.QuarantinedLen() != 1 || q.Len() != 1 {
		t.Fatalf("after the bad read: still queued %v, quarantined %d, len %d", found, q.QuarantinedLen(), q.Len())
	}
	ql := q.QuarantineList()
	if len(ql) != 1 || ql[0].ID != big || !strings.Contains(ql[0].Reason, "checksum") || len(ql[0].Recipients) != 1 {
		t.Fatalf("quarantine list %+v", ql)
	}
	if _, found := q.Get(ok); !found {
		t.Fatal("the rest of the queue is affected")
	}
	// The body file is kept for recovery by hand, also across a restart.
	q.Close()
	q = openQueue(t, dir, Options{InlineLimit: 1024})
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the quarantined body file was removed: %v", err)
	}
}

// A query for due work from the start reads from a floor, the first entry
// an earlier query found (dueFloor), so that it does not step over the
// deleted entries before it. Whatever is written below that floor
// afterwards, by intake, Update or Postpone, is still found.
func TestDueQueriesFindEntriesWrittenBelowAnEarlierQuerysFirst(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	late := make([]string, 3)
	for i := range late {
		late[i] = enqueue(t, q, message(100, "d"), "r@example.net")
		m, _ := q.Get(late[i])
		m.NextAttempt = t0.Add(10 * time.Minute)
		if err := q.Update(m); err != nil {
			t.Fatal(err)
		}
	}
	if due, _, _ := q.DueBefore(t0.Add(time.Hour), Due{}, 10); len(due) != 3 {
		t.Fatalf("due %v, want the three at +10m", due)
	}
	updated := late[0]
	m, _ := q.Get(updated)
	m.NextAttempt = t0.Add(time.Minute)
	if err := q.Update(m); err != nil {
		t.Fatal(err)
	}
	if err := q.Postpone(late[1], t0.Add(10*time.Minute), t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	fresh := enqueue(t, q, message(100, "d"), "r@example.net") // due at once
	due, _, err := q.DueBefore(t0.Add(time.Hour), Due{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range due {
		got = append(got, d.ID)
	}
	want := []string{fresh, updated, late[1], late[2]}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("due %v, want %v (fresh, updated to +1m, postponed to +2m, +10m)", got, want)
	}
}

// Queries from the start and writes that move entries below the first
// one a query found run at once: after they stop, a query from the start
// still finds every message due (none hidden below a floor raised past
// it by a query that missed its write).
func TestDueQueriesRacingWritesHideNothing(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var ids []string
	for range 40 {
		ids = append(ids, enqueue(t, q, message(100, "d"), "r@example.net"))
	}
	stop := make(chan struct{})
	queried := make(chan struct{})
	go func() {
		defer close(queried)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := q.DueBefore(t0.Add(2*time.Hour), Due{}, 5); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 300 {
				id := ids[r.IntN(len(ids))]
				m, ok := q.Get(id)
				if !ok {
					t.Errorf("%s is gone", id)
					return
				}
				// Mostly later, sometimes far below what queries found.
				m.NextAttempt = t0.Add(time.Duration(r.IntN(120)-20) * time.Minute)
				if err := q.Update(m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-queried
	due, _, err := q.DueBefore(t0.Add(2*time.Hour), Due{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != len(ids) {
		t.Fatalf("a query from the start after the writes finds %d of the %d messages", len(due), len(ids))
	}
}
