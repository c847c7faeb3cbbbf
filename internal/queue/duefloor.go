package queue

import (
	"math"
	"sync"
	"time"
)

// dueFloor is a lower bound on the due index's live entries, where a query
// for due work from the start (DueBefore with a zero cursor) begins
// reading. The entries of messages delivered or moved ahead are deleted,
// but Pebble keeps their tombstones until a compaction reaches them, and
// a read from the index's start steps over every one of them, on every
// dispatch pass: with a backlog for one busy destination that was an
// eighth of the relay's CPU, growing with the churn since the last
// compaction.
//
// The floor is raised only by such a query, to the first entry it found,
// and lowered after every commit that writes a due entry (note). A query
// also notes the lowest entry committed while it ran (lowest), so a write
// its snapshot missed never leaves the floor above it. Lowering too far
// only costs reading; so every writer notes after its commit, whether or
// not the commit succeeded.
type dueFloor struct {
	scan sync.Mutex // one floor-raising query at a time

	mu     sync.Mutex
	floor  uint64 // dueTime order; meaningful once set
	set    bool
	lowest uint64 // least due entry noted since the running query began
}

// noteDue is note for the entry m's commit wrote, if it has one (a held
// message has none).
func (q *Queue) noteDue(m *Message) {
	if !m.Held {
		q.dueFloor.note(m.NextAttempt)
	}
}

// note records a due entry committed at t.
func (f *dueFloor) note(t time.Time) {
	v := dueTime(t)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.set && v < f.floor {
		f.floor = v
	}
	if v < f.lowest {
		f.lowest = v
	}
}

// begin starts a query (f.scan held) before its iterator is made: where
// to start reading, as a time (zero: the index's start).
func (f *dueFloor) begin() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lowest = math.MaxUint64
	if !f.set || f.floor == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(f.floor)).UTC()
}

// end finishes a query that found its first entry at first (found false:
// the index holds nothing from the floor on).
func (f *dueFloor) end(first time.Time, found bool) {
	v := uint64(math.MaxUint64)
	if found {
		v = dueTime(first)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.floor, f.set = min(v, f.lowest), true
}
