package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Quarantine sets message id aside because its stored state cannot be
// read: it leaves the schedule, is counted, logged with its id and listed
// by QuarantineList. The stored bytes are kept for recovery by hand (see
// docs/queue-recovery.md).
func (q *Queue) Quarantine(id, reason string) {
	q.quarantine(id, nil, reason, nil, false)
}

// QuarantineMessage is Quarantine for a message whose metadata was read
// (its body was not).
func (q *Queue) QuarantineMessage(m *Message, reason string) {
	q.quarantine(m.ID, m, reason, nil, false)
}

// quarantine does the work; extra are index keys known to point at id
// when its record cannot be read; recordLost says the record is gone
// (not found) although the message was committed, so it is uncounted.
//
// The report is a file in <dir>/quarantine, outside the store, written
// and synced before the store forgets the message: the list must stay
// readable when the store's blocks around q/ are the damaged ones.
func (q *Queue) quarantine(id string, m *Message, reason string, extra [][]byte, recordLost bool) {
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
	dm, gerr := q.getDisk(id)
	if m == nil {
		if gerr == nil {
			m = &dm.Message
		} else if errors.Is(gerr, ErrNotFound) && len(extra) == 0 && !recordLost {
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
	if recordLost || !errors.Is(gerr, ErrNotFound) {
		_ = b.Merge([]byte(kMsgs), encodeCount(-1), nil)
	}
	_ = b.Delete(msgKey(id), nil)
	for _, k := range extra {
		_ = b.Delete(k, nil)
	}
	q.corruptions.Add(1)
	if err := q.writeQuarantined(qr); err != nil {
		q.log.Error("queue: cannot record the quarantine of a corrupt message; it stays in the schedule", "queue_id", id, "reason", reason, "err", err)
		return
	}
	q.quarantined.Add(1)
	if err := q.commit(b, classFree, 0); err != nil {
		// Reported already; the index entries left behind lead back here,
		// where isQuarantined stops at once.
		q.log.Error("queue: cannot take a quarantined message out of the schedule", "queue_id", id, "err", err)
	}
	q.log.Error("queue: message quarantined: its stored data is unreadable; it will not be delivered until recovered by hand",
		"queue_id", id, "reason", reason, "from", qr.From, "recipients", len(qr.Recipients))
}

// writeQuarantined writes <dir>/quarantine/<id> durably (temporary file,
// fsync, rename, fsync of the directory).
func (q *Queue) writeQuarantined(qr Quarantined) error {
	v, err := json.MarshalIndent(qr, "", "  ")
	if err != nil {
		return err
	}
	release, err := q.claim(classFree, int64(len(v))+4096)
	if err != nil {
		return err
	}
	defer release()
	tmp, err := os.CreateTemp(q.quarDir, ".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(v, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(q.quarDir, qr.ID)); err != nil {
		return err
	}
	return syncDir(q.quarDir)
}

func (q *Queue) isQuarantined(id string) bool {
	_, err := os.Stat(filepath.Join(q.quarDir, id))
	return err == nil
}

// countQuarantined counts the reports at Open.
func (q *Queue) countQuarantined() error {
	des, err := os.ReadDir(q.quarDir)
	if err != nil {
		return err
	}
	n := 0
	for _, de := range des {
		if len(de.Name()) == idLength {
			n++
		}
	}
	q.quarantined.Store(int64(n))
	return nil
}

// QuarantinedLen is the number of quarantined messages.
func (q *Queue) QuarantinedLen() int { return int(q.quarantined.Load()) }

// Corruptions counts the corrupt records and index regions met since Open.
func (q *Queue) Corruptions() int64 { return q.corruptions.Load() }

// QuarantineList returns the quarantined messages in id order. A report
// that cannot be parsed is listed by its id, with the reason why.
func (q *Queue) QuarantineList() []Quarantined {
	des, err := os.ReadDir(q.quarDir)
	if err != nil {
		q.log.Error("queue: cannot list the quarantine", "err", err)
		return nil
	}
	var out []Quarantined
	for _, de := range des {
		id := de.Name()
		if len(id) != idLength {
			continue
		}
		var qr Quarantined
		b, err := os.ReadFile(filepath.Join(q.quarDir, id))
		if err == nil {
			err = json.Unmarshal(b, &qr)
		}
		if err != nil || qr.ID != id {
			qr = Quarantined{ID: id, Reason: fmt.Sprintf("the quarantine report itself is unreadable: %v", err)}
		}
		out = append(out, qr)
	}
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
			q.quarantine(id, nil, "index entry without a message record", [][]byte{k}, true)
		default:
			q.quarantine(id, nil, fmt.Sprintf("%v: m/%s: %v", ErrCorrupt, id, err), [][]byte{k}, false)
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
			pageStart := time.Now()
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
			yieldAfter(pageStart)
			lower = append(keys[len(keys)-1], 0)
		}
	}
	if q.corruptions.Load() > 0 {
		q.scrubDeep()
	}
	q.pruneIdempotencyKeys()
	q.log.Info("queue: scrub done", "checked", checked, "quarantined", q.QuarantinedLen(), "took", time.Since(start).Round(time.Millisecond).String())
}

// scrubDeep runs when the store met corruption: an index region that
// could not be read hides the ids in it, so the ids are taken from the
// other places a message leaves them. Every readable record gets back
// the index entries it lost (it is recovered, not just reported); every
// inline body (b/<id>) and body file whose record is unreadable or gone
// is quarantined by id. It reads the whole store once, in pages, only
// after corruption.
func (q *Queue) scrubDeep() {
	reindexed, found := 0, 0
	q.pages([]byte(pMsg), upperOf(pMsg), func(k, v []byte) {
		id := string(k[len(pMsg):])
		if len(id) != idLength {
			return
		}
		var dm diskMessage
		if json.Unmarshal(v, &dm) != nil || dm.ID != id {
			q.quarantine(id, nil, fmt.Sprintf("%v: m/%s: unreadable record", ErrCorrupt, id), nil, false)
			return
		}
		if q.reindex(id) {
			reindexed++
		}
	})
	lost := func(id, where string) {
		if q.isQuarantined(id) {
			return
		}
		_, err := q.getDisk(id)
		switch {
		case err == nil:
		case errors.Is(err, ErrNotFound):
			found++
			q.quarantine(id, nil, fmt.Sprintf("%v: the record and index entries of %s were lost; its body is kept in %s", ErrCorrupt, id, where), nil, true)
		default:
			found++
			q.quarantine(id, nil, err.Error(), nil, false)
		}
	}
	q.pages([]byte(pBody), upperOf(pBody), func(k, _ []byte) {
		if id := string(k[len(pBody):]); len(id) == idLength {
			lost(id, "b/"+id)
		}
	})
	if des, err := os.ReadDir(q.bodyDir); err == nil {
		for _, de := range des {
			// A body file without a record at Open was an orphan and is
			// gone; one written since belongs to intake in progress, whose
			// record is not there yet, so only unreadable records count.
			if id := de.Name(); len(id) == idLength {
				if _, err := q.getDisk(id); err != nil && !errors.Is(err, ErrNotFound) {
					lost(id, "bodies/"+id)
				}
			}
		}
	}
	q.log.Warn("queue: the store met corruption; checked every record and body for ids the damaged index regions hid",
		"reindexed", reindexed, "quarantined_by_body", found)
}

// reindex gives message id back the index entries its record implies
// when they are missing; true if it did.
func (q *Queue) reindex(id string) bool {
	if q.enter() != nil {
		return false
	}
	defer q.leave()
	l := q.lockID(id)
	l.Lock()
	defer l.Unlock()
	dm, err := q.getDisk(id)
	if err != nil {
		return false
	}
	b := q.db.NewBatch()
	defer b.Close()
	for _, k := range indexKeys(&dm.Message) {
		if _, closer, err := q.db.Get(k); err == nil {
			closer.Close()
			continue
		}
		_ = b.Set(k, nil, nil)
	}
	if b.Empty() {
		return false
	}
	err = q.commit(b, classState, 0)
	q.noteDue(&dm.Message)
	if err != nil {
		q.log.Error("queue: cannot restore the index entries of a message", "queue_id", id, "err", err)
		return false
	}
	q.log.Warn("queue: restored index entries lost to corruption", "queue_id", id)
	return true
}

// scrubShare is the share of one core a scrub may take: it is a
// background check, and right after a restart it must not compete with
// intake (a 1M-message queue's scrub reads a million records).
const scrubShare = 0.1

// yieldAfter pauses a scrub that worked since start for long enough to
// keep it at scrubShare of a core: at least 5 ms, at most 200 ms, so
// Close, which waits for the scrub, is not held up.
func yieldAfter(start time.Time) {
	worked := time.Since(start)
	time.Sleep(min(max(time.Duration(float64(worked)*(1-scrubShare)/scrubShare), 5*time.Millisecond), 200*time.Millisecond))
}

// pages calls fn for every readable key in [lower, upper), a page at a
// time with a pause between pages, so a deep scrub yields to intake.
func (q *Queue) pages(lower, upper []byte, fn func(k, v []byte)) {
	type kv struct{ k, v []byte }
	var page []kv
	for {
		if q.Err() != nil {
			return
		}
		pageStart := time.Now()
		page = page[:0]
		_ = q.scan(lower, upper, func(k, v []byte) bool {
			page = append(page, kv{bytes.Clone(k), bytes.Clone(v)})
			return len(page) < 256
		})
		for _, e := range page {
			fn(e.k, e.v)
		}
		if len(page) < 256 {
			return
		}
		yieldAfter(pageStart)
		lower = append(page[len(page)-1].k, 0)
	}
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
