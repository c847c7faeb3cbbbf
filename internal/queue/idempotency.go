package queue

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// pAPIIdem is the HTTP API's Idempotency-Key namespace:
// k/<principal>/<key> (see the key layout in doc.go).
const pAPIIdem = "k/"

// APIIdempotencyTTL is how long an Idempotency-Key's answer is kept.
const APIIdempotencyTTL = 24 * time.Hour

// APIAnswer is what the HTTP API answered a request with an
// Idempotency-Key: stored with the message it queued, in the same batch,
// so a retry after a crash between the commit and the response still
// gets the first answer.
type APIAnswer struct {
	// BodyHash identifies the request (a hash of its method, path, query,
	// content type and body): the same key with another request is refused.
	BodyHash string    `json:"hash"`
	ID       string    `json:"id"`
	MsgID    string    `json:"msgid,omitempty"`
	At       time.Time `json:"at"`
}

func apiIdemKey(principal, key string) []byte {
	// The principal first, so one credential's keys cannot collide with
	// another's; "/" cannot occur in a principal key's kind.
	return []byte(pAPIIdem + principal + "/" + key)
}

// APIIdempotencyRecord is the record that commits a's answer to key for
// principal in the same batch as its message (Writer.Commit's also).
func APIIdempotencyRecord(principal, key string, a APIAnswer) Record {
	v, _ := json.Marshal(a)
	return Record{key: apiIdemKey(principal, key), value: v}
}

// APIIdempotency returns the answer stored for principal's key, if it is
// younger than APIIdempotencyTTL.
func (q *Queue) APIIdempotency(principal, key string) (APIAnswer, bool, error) {
	if err := q.enter(); err != nil {
		return APIAnswer{}, false, err
	}
	defer q.leave()
	v, closer, err := q.db.Get(apiIdemKey(principal, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return APIAnswer{}, false, nil
	}
	if err != nil {
		return APIAnswer{}, false, err
	}
	defer closer.Close()
	var a APIAnswer
	if err := json.Unmarshal(v, &a); err != nil {
		return APIAnswer{}, false, ErrCorrupt
	}
	if !q.opts.Now().Before(a.At.Add(APIIdempotencyTTL)) {
		return APIAnswer{}, false, nil
	}
	return a, true, nil
}

// PruneAPIIdempotency deletes answers older than APIIdempotencyTTL, at
// most limit of them per call, and returns how many it deleted. The
// deletions are not synced: one lost in a crash is deleted again later.
func (q *Queue) PruneAPIIdempotency(limit int) (int, error) {
	if err := q.enter(); err != nil {
		return 0, err
	}
	defer q.leave()
	cut := q.opts.Now().Add(-APIIdempotencyTTL)
	var old [][]byte
	// "k0" is the first key after every "k/..." ('0' follows '/').
	err := q.scan([]byte(pAPIIdem), []byte("k0"), func(k, v []byte) bool {
		var a APIAnswer
		if json.Unmarshal(v, &a) != nil || !a.At.After(cut) {
			old = append(old, append([]byte(nil), k...))
		}
		return len(old) < limit
	})
	if err != nil {
		return 0, err
	}
	if len(old) == 0 {
		return 0, nil
	}
	b := q.db.NewBatch()
	defer b.Close()
	for _, k := range old {
		if err := b.Delete(k, nil); err != nil {
			return 0, err
		}
	}
	if err := q.commitOpts(b, classFree, 0, pebble.NoSync); err != nil {
		return 0, err
	}
	return len(old), nil
}
