package queue

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func dueIDs(t *testing.T, q *Queue, now time.Time) []string {
	t.Helper()
	es, _, err := q.DueEvents(now, PendingEvent{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID+"="+string(e.Value))
	}
	return ids
}

func TestEventsAreDurableExactlyWithTheirMessageChange(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir, Options{})
	t0 := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	w, _ := q.NewWriter()
	w.Write([]byte("hello\r\n"))
	if err := w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}},
		PendingEventRecord(t0, "ev-queued", []byte("q")), EventLogRecord(t0, "ev-queued", []byte("q"))); err != nil {
		t.Fatal(err)
	}
	id := w.ID()
	m, _ := q.Get(id)
	m.Recipients[0].State = "delivered"
	if err := q.Update(m, PendingEventRecord(t0.Add(time.Second), "ev-update", []byte("u"))); err != nil {
		t.Fatal(err)
	}
	if err := q.RemoveWith(id, PendingEventRecord(t0.Add(2*time.Second), "ev-removed", []byte("r"))); err != nil {
		t.Fatal(err)
	}
	// A change that fails writes none of its events.
	if err := q.RemoveWith(id, PendingEventRecord(t0, "ev-never", []byte("x"))); err == nil {
		t.Fatal("removing a removed message succeeded")
	}
	q.Close()

	q = openQueue(t, dir, Options{})
	defer q.Close()
	want := []string{"ev-queued=q", "ev-update=u", "ev-removed=r"}
	if got := dueIDs(t, q, t0.Add(time.Hour)); !slices.Equal(got, want) {
		t.Fatalf("after reopen: %v, want %v", got, want)
	}
	if got := dueIDs(t, q, t0.Add(time.Second)); !slices.Equal(got, want[:2]) {
		t.Fatalf("due at t0+1s: %v, want %v", got, want[:2])
	}
	if n := q.PendingEventCount(1000); n != 3 {
		t.Fatalf("PendingEventCount = %d, want 3", n)
	}
}

func TestPendingEventsPageRescheduleAndDelete(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	t0 := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	var rs []Record
	for i := range 5 {
		rs = append(rs, PendingEventRecord(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("ev%d", i), []byte("v")))
	}
	w, _ := q.NewWriter()
	if err := w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}}, rs...); err != nil {
		t.Fatal(err)
	}
	page, next, err := q.DueEvents(t0.Add(10*time.Minute), PendingEvent{}, 2)
	if err != nil || len(page) != 2 || page[0].ID != "ev0" || page[1].ID != "ev1" || !next.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("first page %+v next %v err %v", page, next, err)
	}
	page, _, _ = q.DueEvents(t0.Add(10*time.Minute), page[1], 2)
	if len(page) != 2 || page[0].ID != "ev2" || page[1].ID != "ev3" {
		t.Fatalf("second page %+v", page)
	}
	if err := q.RescheduleEvent(page[0], t0.Add(time.Hour), []byte("retried")); err != nil {
		t.Fatal(err)
	}
	if err := q.DeleteEvents(page[1]); err != nil {
		t.Fatal(err)
	}
	_, next, _ = q.DueEvents(t0.Add(30*time.Minute), PendingEvent{}, 100)
	if !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("next due = %v, want the rescheduled event's %v", next, t0.Add(time.Hour))
	}
	if got, want := dueIDs(t, q, t0.Add(time.Hour)), []string{"ev0=v", "ev1=v", "ev4=v", "ev2=retried"}; !slices.Equal(got, want) {
		t.Fatalf("due: %v, want %v", got, want)
	}
}

func TestEventLogListsNewestFirstAndPrunesByAge(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	t0 := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	var rs []Record
	for i := range 4 {
		rs = append(rs, EventLogRecord(t0.Add(time.Duration(i)*time.Hour), fmt.Sprintf("ev%d", i), []byte{byte('a' + i)}))
	}
	w, _ := q.NewWriter()
	if err := w.Commit(Message{From: "a@example.com", Recipients: []Recipient{{Address: "b@example.net"}}}, rs...); err != nil {
		t.Fatal(err)
	}
	list := func() []string {
		var out []string
		if err := q.EventLog(func(at time.Time, id string, v []byte) bool {
			out = append(out, fmt.Sprintf("%s@%d=%s", id, at.Sub(t0)/time.Hour, v))
			return true
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got, want := list(), []string{"ev3@3=d", "ev2@2=c", "ev1@1=b", "ev0@0=a"}; !slices.Equal(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	if err := q.PruneEventLog(t0.Add(2 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := list(), []string{"ev3@3=d", "ev2@2=c"}; !slices.Equal(got, want) {
		t.Fatalf("after pruning: %v, want %v", got, want)
	}
	if n := q.PendingEventCount(10); n != 0 {
		t.Fatalf("log entries counted as pending: %d", n)
	}
}
