package queue

import (
	"errors"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// Suppressions returns the store's suppression list namespace (s/<address>):
// package delivery keeps its entries there, one key per address, so adding
// and looking up an address costs one write or read whatever the list's
// size.
func (q *Queue) Suppressions() *KV { return &KV{q: q, prefix: pSupp} }

// KV is a namespace of keys in the queue's store.
type KV struct {
	q      *Queue
	prefix string
}

func (kv *KV) key(k string) []byte { return []byte(kv.prefix + strings.ToLower(k)) }

// Get returns the value of k.
func (kv *KV) Get(k string) ([]byte, bool, error) {
	if err := kv.q.enter(); err != nil {
		return nil, false, err
	}
	defer kv.q.leave()
	v, closer, err := kv.q.db.Get(kv.key(k))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// Put durably sets k to v. sync false leaves the write in the log until
// the next synced commit (for counters that may be lost in a crash).
func (kv *KV) Put(k string, v []byte, sync bool) error {
	if err := kv.q.enter(); err != nil {
		return err
	}
	defer kv.q.leave()
	b := kv.q.db.NewBatch()
	defer b.Close()
	if err := b.Set(kv.key(k), v, nil); err != nil {
		return err
	}
	wo := pebble.Sync
	if !sync {
		wo = pebble.NoSync
	}
	return kv.q.commitOpts(b, classState, 0, wo)
}

// Delete durably removes k.
func (kv *KV) Delete(k string) error {
	if err := kv.q.enter(); err != nil {
		return err
	}
	defer kv.q.leave()
	b := kv.q.db.NewBatch()
	defer b.Close()
	if err := b.Delete(kv.key(k), nil); err != nil {
		return err
	}
	return kv.q.commit(b, classFree, 0)
}

// Walk calls fn for each key (without the namespace prefix) in order until
// it returns false.
func (kv *KV) Walk(fn func(k string, v []byte) bool) error { return kv.WalkAfter("", fn) }

// WalkAfter is Walk from the first key after after (paging: one seek, not
// a walk past the earlier keys).
func (kv *KV) WalkAfter(after string, fn func(k string, v []byte) bool) error {
	if err := kv.q.enter(); err != nil {
		return err
	}
	defer kv.q.leave()
	lower := []byte(kv.prefix)
	if after != "" {
		lower = append(kv.key(after), 0)
	}
	upper := kv.prefix[:len(kv.prefix)-1] + string(rune(kv.prefix[len(kv.prefix)-1]+1))
	return kv.q.scan(lower, []byte(upper), func(k, v []byte) bool {
		return fn(string(k[len(kv.prefix):]), v)
	})
}
