package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const kQuar = "c/quarantined"

// Quarantine sets message id aside because its stored state cannot be
// read: it leaves the schedule, is counted, logged with its id and listed
// by QuarantineList. The stored bytes are kept for recovery by hand (see
// docs/queue-recovery.md).
func (q *Queue) Quarantine(id, reason string) {
	q.quarantine(id, nil, reason, nil)
}

// QuarantineMessage is Quarantine for a message whose metadata was read
// (its body was not).
func (q *Queue) QuarantineMessage(m *Message, reason string) {
	q.quarantine(m.ID, m, reason, nil)
}

// quarantine does the work; extra are index keys known to point at id
// when its record cannot be read.
func (q *Queue) quarantine(id string, m *Message, reason string, extra [][]byte) {
	if q.enter() != nil {
		return
	}
	defer q.leave()
	l := q.lockID(id)
	l.Lock()
	defer l.Unlock()
	if q.isQuarantined(id) {
		return
	}
	if m == nil {
		if dm, err := q.getDisk(id); err == nil {
			m = &dm.Message
		} else if errors.Is(err, ErrNotFound) && len(extra) == 0 {
			return // removed meanwhile
		}
	}
	qr := Quarantined{ID: id, Reason: reason, At: q.opts.Now().UTC()}
	b := q.db.NewBatch()
	defer b.Close()
	if m != nil {
		qr.From, qr.Recipients = m.From, m.Recipients
		extra = append(extra, indexKeys(m)...)
		if m.Held {
			_ = b.Merge([]byte(kHeld), encodeCount(-1), nil)
		}
	}
	if _, err := q.getDisk(id); !errors.Is(err, ErrNotFound) {
		_ = b.Merge([]byte(kMsgs), encodeCount(-1), nil)
	}
	v, _ := json.Marshal(qr)
	_ = b.Set([]byte(pQuar+id), v, nil)
	_ = b.Merge([]byte(kQuar), encodeCount(1), nil)
	_ = b.Delete(msgKey(id), nil)
	for _, k := range extra {
		_ = b.Delete(k, nil)
	}
	q.corruptions.Add(1)
	if err := q.commit(b, classFree, 0); err != nil {
		q.log.Error("queue: cannot record the quarantine of a corrupt message", "queue_id", id, "reason", reason, "err", err)
		return
	}
	q.log.Error("queue: message quarantined: its stored data is unreadable; it will not be delivered until recovered by hand",
		"queue_id", id, "reason", reason, "from", qr.From, "recipients", len(qr.Recipients))
}

func (q *Queue) isQuarantined(id string) bool {
	_, closer, err := q.db.Get([]byte(pQuar + id))
	if err == nil {
		closer.Close()
		return true
	}
	return false
}

// QuarantinedLen is the number of quarantined messages.
func (q *Queue) QuarantinedLen() int { return int(q.counter(kQuar)) }

// Corruptions counts the corrupt records and index regions met since Open.
func (q *Queue) Corruptions() int64 { return q.corruptions.Load() }

// QuarantineList returns the quarantined messages in id order.
func (q *Queue) QuarantineList() []Quarantined {
	var out []Quarantined
	_ = q.scan([]byte(pQuar), []byte("q0"), func(_, v []byte) bool {
		var qr Quarantined
		if json.Unmarshal(v, &qr) == nil {
			out = append(out, qr)
		}
		return true
	})
	return out
}

// DropDue deletes a due-index entry whose message is gone (its record was
// lost to corruption); the scheduler calls it for entries it cannot
// resolve.
func (q *Queue) DropDue(d Due) {
	if q.enter() != nil {
		return
	}
	defer q.leave()
	l := q.lockID(d.ID)
	l.Lock()
	defer l.Unlock()
	if _, err := q.getDisk(d.ID); !errors.Is(err, ErrNotFound) {
		return
	}
	_ = q.db.Delete(dueKey(d.At, d.ID), pebble.NoSync)
}

// scrub runs once after Open: every entry of the schedule indexes must
// name a readable record, and idempotency keys older than idemTTL go. It
// reads keys and checks records (Pebble verifies block checksums), but
// decodes nothing, so it is cheap even for a big queue.
func (q *Queue) scrub() {
	defer close(q.scrubbed)
	start := time.Now()
	checked := 0
	check := func(k []byte, id string) {
		checked++
		_, closer, err := q.db.Get(msgKey(id))
		switch {
		case err == nil:
			closer.Close()
		case errors.Is(err, pebble.ErrNotFound):
			if q.isQuarantined(id) {
				return
			}
			// An index entry without its record: a record lost to
			// corruption that took its index entry's neighbours along.
			q.quarantine(id, nil, "index entry without a message record", [][]byte{k})
		default:
			q.quarantine(id, nil, fmt.Sprintf("%v: m/%s: %v", ErrCorrupt, id, err), [][]byte{k})
		}
	}
	var keys [][]byte
	collect := func(k, _ []byte) bool {
		keys = append(keys, append([]byte(nil), k...))
		if len(keys) >= 1024 {
			return false
		}
		return true
	}
	for _, r := range [][2]string{{pDue, "d0"}, {pHeld, "h0"}} {
		lower := []byte(r[0])
		for {
			if q.Err() != nil {
				return
			}
			keys = keys[:0]
			_ = q.scan(lower, []byte(r[1]), collect)
			for _, k := range keys {
				id := ""
				if r[0] == pDue {
					_, id, _ = parseDueKey(k)
				} else {
					id = string(k[len(pHeld):])
				}
				if len(id) == idLength {
					check(k, id)
				}
			}
			if len(keys) < 1024 {
				break
			}
			// A big queue's scrub should not compete with intake right
			// after a restart: it is a background check.
			time.Sleep(5 * time.Millisecond)
			lower = append(keys[len(keys)-1], 0)
		}
	}
	q.pruneIdempotencyKeys()
	q.log.Info("queue: scrub done", "checked", checked, "quarantined", q.QuarantinedLen(), "took", time.Since(start).Round(time.Millisecond).String())
}

// checkedReader verifies the stored bytes against their length and CRC.
type checkedReader struct {
	r     io.Reader
	id    string
	want  int64
	crc   uint32
	n     int64
	sum   uint32
	bad   bool
	onBad func(why string)
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.bad {
		return 0, fmt.Errorf("%w: body of %s", ErrCorrupt, c.id)
	}
	n, err := c.r.Read(p)
	c.sum = crc32.Update(c.sum, crcTable, p[:n])
	c.n += int64(n)
	if c.n > c.want {
		return 0, c.fail(fmt.Sprintf("body of %s is longer than the %d bytes stored", c.id, c.want))
	}
	if err == io.EOF {
		if c.n != c.want {
			return 0, c.fail(fmt.Sprintf("body of %s has %d bytes, %d were stored", c.id, c.n, c.want))
		}
		if c.sum != c.crc {
			return 0, c.fail(fmt.Sprintf("body of %s fails its checksum", c.id))
		}
	}
	return n, err
}

func (c *checkedReader) fail(why string) error {
	c.bad = true
	if c.onBad != nil {
		c.onBad(fmt.Sprintf("%v: %s", ErrCorrupt, why))
	}
	return fmt.Errorf("%w: %s", ErrCorrupt, why)
}
