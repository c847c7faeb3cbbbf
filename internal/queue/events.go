package queue

import (
	"bytes"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Delivery events (package events owns their content; the values here are
// opaque bytes). A pending event waits for its webhook under
// e/<next attempt>/<event id>, ordered like the due index; every event is
// also kept for listing under v/<time>/<event id> until pruned.
const (
	pEvent    = "e/"
	pEventLog = "v/"
)

// PendingEvent is an event waiting for its webhook.
type PendingEvent struct {
	At    time.Time // its next attempt
	ID    string
	Value []byte
}

// upperOf is the first key after every key with prefix p ("e/" -> "e0").
func upperOf(p string) []byte { return []byte(p[:len(p)-1] + string(rune(p[len(p)-1]+1))) }

// PendingEventRecord stores an event for its webhook, due at at; written
// in the batch of the message change that caused it, it is durable
// exactly when that change is.
func PendingEventRecord(at time.Time, id string, value []byte) Record {
	return Record{key: timeKey(pEvent, at, id), value: value}
}

// EventLogRecord keeps an event for listing (relay queue events), at its
// time, until PruneEventLog removes it.
func EventLogRecord(at time.Time, id string, value []byte) Record {
	return Record{key: timeKey(pEventLog, at, id), value: value}
}

// DueEvents returns up to limit pending events due at or before now,
// earliest first, starting after from (zero: from the start; only an At:
// from that time on, which skips the deleted keys before it without
// reading them), and when the first later one falls due (zero: none, or
// unknown past limit).
func (q *Queue) DueEvents(now time.Time, from PendingEvent, limit int) ([]PendingEvent, time.Time, error) {
	if err := q.enter(); err != nil {
		return nil, time.Time{}, err
	}
	defer q.leave()
	var out []PendingEvent
	next, err := q.scanDue(pEvent, now, from.At, from.ID, limit, func(at time.Time, id string, v []byte) bool {
		out = append(out, PendingEvent{At: at, ID: id, Value: bytes.Clone(v)})
		return true
	})
	return out, next, err
}

// RescheduleEvent moves pending event e to be due at at, with a new
// value (its attempt count). Not synced: losing it in a crash makes the
// event due earlier, which at-least-once delivery allows.
func (q *Queue) RescheduleEvent(e PendingEvent, at time.Time, value []byte) error {
	return q.eventBatch(classState, func(b *pebble.Batch) error {
		if err := b.Delete(timeKey(pEvent, e.At, e.ID), nil); err != nil {
			return err
		}
		return b.Set(timeKey(pEvent, at, e.ID), value, nil)
	})
}

// DeleteEvents forgets pending events (delivered, or given up). Not
// synced: an event that comes back after a crash is sent again with the
// same id, which receivers deduplicate.
func (q *Queue) DeleteEvents(es ...PendingEvent) error {
	return q.eventBatch(classFree, func(b *pebble.Batch) error {
		for _, e := range es {
			if err := b.Delete(timeKey(pEvent, e.At, e.ID), nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// PendingEventCount counts the pending events, reading at most max keys.
func (q *Queue) PendingEventCount(max int) int {
	if q.enter() != nil {
		return 0
	}
	defer q.leave()
	n := 0
	_ = q.scan([]byte(pEvent), upperOf(pEvent), func(_, _ []byte) bool { n++; return n < max })
	return n
}

// EventLog calls fn for each listed event, newest first, until it returns
// false.
func (q *Queue) EventLog(fn func(at time.Time, id string, value []byte) bool) error {
	if err := q.enter(); err != nil {
		return err
	}
	defer q.leave()
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: []byte(pEventLog), UpperBound: upperOf(pEventLog)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.Last(); ok; ok = it.Prev() {
		t, id, good := parseTimeKey(pEventLog, it.Key())
		if good && !fn(t, id, it.Value()) {
			return nil
		}
	}
	return it.Error()
}

// PruneEventLog removes the listed events older than before.
func (q *Queue) PruneEventLog(before time.Time) error {
	return q.eventBatch(classFree, func(b *pebble.Batch) error {
		return b.DeleteRange([]byte(pEventLog), timeKey(pEventLog, before, ""), nil)
	})
}

func (q *Queue) eventBatch(c class, fn func(b *pebble.Batch) error) error {
	if err := q.enter(); err != nil {
		return err
	}
	defer q.leave()
	b := q.db.NewBatch()
	defer b.Close()
	if err := fn(b); err != nil {
		return err
	}
	return q.commitOpts(b, c, 0, pebble.NoSync)
}
