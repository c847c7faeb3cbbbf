package delivery

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Suppression is one suppressed recipient, or the tombstone of one that
// was lifted.
type Suppression struct {
	Address string `json:"address"`
	// Reply is the remote server's reply that suppressed the address.
	Reply      string    `json:"reply"`
	RemoteHost string    `json:"remoteHost,omitempty"`
	Added      time.Time `json:"added"`
	Expires    time.Time `json:"expires"`
	// Hits counts the messages bounced at once because of this entry by
	// this relay (it is not shared).
	Hits int `json:"hits"`
	// Updated orders the versions of an address across the pool (last
	// writer wins): when it was added, renewed or lifted, on the clock of
	// the member that did it. Zero in entries written before the list was
	// shared: Added stands for it.
	Updated time.Time `json:"updated,omitzero"`
	// SenderDomains are the domains of the envelope senders whose mail
	// bounced at the address (the newest last, at most
	// maxSenderDomains): the HTTP API shows and lifts an entry only for
	// credentials allowed to send as one of them.
	SenderDomains []string `json:"senderDomains,omitempty"`
	// Removed marks a tombstone: the suppression was lifted at Updated.
	// It is kept until Expires, so that a member that still holds the old
	// entry cannot bring it back.
	Removed bool `json:"removed,omitempty"`
	// Seen is when this relay stored this version, on its own clock: the
	// cursor of Changes.
	Seen time.Time `json:"seen,omitzero"`
}

func (e Suppression) version() time.Time {
	if e.Updated.IsZero() {
		return e.Added
	}
	return e.Updated
}

func (e Suppression) seen() time.Time {
	if e.Seen.IsZero() {
		return e.version()
	}
	return e.Seen
}

// supersedes reports whether e wins over old: a later version, or at the
// same instant a removal over an addition (so a tie never resurrects).
func (e Suppression) supersedes(old Suppression) bool {
	a, b := e.version(), old.version()
	return a.After(b) || (a.Equal(b) && e.Removed && !old.Removed)
}

// SuppressionStore keeps the entries, one key per address: the relay's
// queue store (queue.Queue.Suppressions). Put with sync false may lose
// the write in a crash (hit counts). A store that also has
// WalkAfter(after, fn), as queue.KV does, lets Changes seek to a page
// instead of walking past the earlier keys.
type SuppressionStore interface {
	Get(key string) ([]byte, bool, error)
	Put(key string, value []byte, sync bool) error
	Delete(key string) error
	Walk(fn func(key string, value []byte) bool) error
}

// Suppressions is a pool's list of recipients whose delivery failed
// permanently with a hard invalid_recipient reply (see package bounce).
// Until an entry expires, mail to the address is bounced at once without
// contacting the remote server, which protects the relay's reputation
// (repeatedly mailing non-existent users is what spam traps look for).
//
// Each entry is one key in the store, so adding, lifting and looking up
// an address cost one write or read whatever the size of the list. Writes
// to one address are serialised by one of a fixed set of locks, chosen by
// the address's hash. It is safe for concurrent use.
//
// The list is shared by the members of a pool (package peer): OnChange
// reports this relay's own additions and removals, Merge takes another
// member's versions (last writer wins by Updated; a removal leaves a
// tombstone until the entry would have expired), and Changes lists what
// changed since a time, for members catching up.
type Suppressions struct {
	store SuppressionStore
	ttl   time.Duration
	now   func() time.Time
	locks [64]sync.Mutex

	onChange atomic.Pointer[func(Suppression)]
	// count is the number of entries in force, and latest the last Seen
	// time written, both as of the last Sweep plus the changes since.
	count  atomic.Int64
	latest atomic.Int64
}

// NewSuppressions returns the list kept in store (nil: in memory only).
// Entries added later last ttl. now is the clock (nil: time.Now). It reads
// the whole store once (Sweep) to count the entries.
func NewSuppressions(store SuppressionStore, ttl time.Duration, now func() time.Time) (*Suppressions, error) {
	if ttl <= 0 {
		return nil, errors.New("suppression ttl must be positive")
	}
	if now == nil {
		now = time.Now
	}
	if store == nil {
		store = &memoryStore{m: map[string][]byte{}}
	}
	s := &Suppressions{store: store, ttl: ttl, now: now}
	if err := s.Sweep(); err != nil {
		return nil, fmt.Errorf("reading the suppression list: %w", err)
	}
	return s, nil
}

func normalizeAddress(a string) string { return strings.ToLower(strings.TrimSpace(a)) }

func (s *Suppressions) lock(k string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(k))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

// OnChange sets fn to be called after each addition, renewal or removal
// made by this relay (not for versions taken with Merge), outside any
// lock. The peer path uses it to push changes to the other members.
func (s *Suppressions) OnChange(fn func(Suppression)) { s.onChange.Store(&fn) }

func (s *Suppressions) changed(e Suppression) {
	if fn := s.onChange.Load(); fn != nil && *fn != nil {
		(*fn)(e)
	}
}

// next returns the version time for a change of an address whose current
// version is old: now, or just after old when this clock is behind.
func next(now time.Time, old Suppression, exists bool) time.Time {
	if exists && !now.After(old.version()) {
		return old.version().Add(time.Nanosecond)
	}
	return now
}

// maxSenderDomains bounds an entry's SenderDomains: an address many
// senders mail keeps the most recent ones.
const maxSenderDomains = 16

// Add suppresses addr because of reply (from host) to mail from sender
// (the envelope sender; "" for none). Adding an address that is already
// suppressed renews it and adds sender's domain to its SenderDomains.
func (s *Suppressions) Add(addr, reply, host, sender string) error {
	k := normalizeAddress(addr)
	if k == "" {
		return errors.New("suppression: empty address")
	}
	mu := s.lock(k)
	mu.Lock()
	t := s.now()
	old, exists := s.rawLocked(k)
	e := Suppression{Address: k, Reply: reply, RemoteHost: host, Added: t, Expires: t.Add(s.ttl),
		Updated: next(t, old, exists), Seen: t}
	if exists && !old.Removed {
		e.Hits = old.Hits
		e.SenderDomains = old.SenderDomains
	}
	if i := strings.LastIndexByte(sender, '@'); i >= 0 && i < len(sender)-1 {
		d := normalizeAddress(sender[i+1:])
		e.SenderDomains = append(slices.DeleteFunc(slices.Clone(e.SenderDomains), func(x string) bool { return x == d }), d)
		if n := len(e.SenderDomains); n > maxSenderDomains {
			e.SenderDomains = e.SenderDomains[n-maxSenderDomains:]
		}
	}
	err := s.write(e, old, exists, true)
	mu.Unlock()
	if err != nil {
		return fmt.Errorf("saving suppression: %w", err)
	}
	s.changed(e)
	return nil
}

// Remove lifts the suppression of addr; it reports whether there was one.
// It leaves a tombstone until the entry would have expired.
func (s *Suppressions) Remove(addr string) (bool, error) {
	k := normalizeAddress(addr)
	mu := s.lock(k)
	mu.Lock()
	t := s.now()
	old, exists := s.rawLocked(k)
	if !exists || old.Removed {
		mu.Unlock()
		return false, nil
	}
	e := old
	e.Removed, e.Updated, e.Seen, e.Hits = true, next(t, old, true), t, 0
	err := s.write(e, old, true, true)
	mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("saving suppression removal: %w", err)
	}
	s.changed(e)
	return true, nil
}

// Merge stores another member's version of an entry if it supersedes the
// one here (last writer wins; see Suppression.Updated). It reports
// whether it did. Versions already expired are not kept.
func (s *Suppressions) Merge(e Suppression) (bool, error) {
	n, err := s.MergeAll([]Suppression{e})
	return n == 1, err
}

// MergeAll is Merge for a batch (a page from another member): the
// versions are written unsynced and made durable together by one synced
// write at the end. It returns how many it stored; on an invalid version
// it stops with an error naming it.
func (s *Suppressions) MergeAll(es []Suppression) (int, error) {
	var last *Suppression
	n := 0
	for _, e := range es {
		ok, err := s.merge(&e)
		if err != nil {
			return n, err
		}
		if ok {
			n++
			last = &e
		}
	}
	if last != nil {
		mu := s.lock(last.Address)
		mu.Lock()
		defer mu.Unlock()
		// Rewriting the last version synced makes every earlier unsynced
		// write durable too (one write-ahead log, in order).
		if cur, ok := s.rawLocked(last.Address); ok && cur.version().Equal(last.version()) {
			if err := s.put(cur, true); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (s *Suppressions) merge(e *Suppression) (bool, error) {
	e.Address = normalizeAddress(e.Address)
	switch {
	case e.Address == "":
		return false, errors.New("suppression: address is empty")
	case e.Expires.IsZero():
		return false, fmt.Errorf("suppression %s: expires is not set", e.Address)
	case e.version().IsZero():
		return false, fmt.Errorf("suppression %s: updated is not set", e.Address)
	}
	mu := s.lock(e.Address)
	mu.Lock()
	defer mu.Unlock()
	t := s.now()
	if !t.Before(e.Expires) {
		return false, nil
	}
	old, exists := s.rawLocked(e.Address)
	if exists && !e.supersedes(old) {
		return false, nil
	}
	e.Hits = 0
	if exists && !old.Removed && !e.Removed {
		e.Hits = old.Hits // hits are this relay's own count
	}
	e.Seen = t
	if err := s.write(*e, old, exists, false); err != nil {
		return false, err
	}
	return true, nil
}

// write stores e over old (exists: there was an unexpired version),
// synced or not, and keeps the count and latest change current. The caller holds e's lock.
func (s *Suppressions) write(e, old Suppression, exists, sync bool) error {
	if err := s.put(e, sync); err != nil {
		return err
	}
	wasLive, isLive := exists && !old.Removed, !e.Removed
	switch {
	case isLive && !wasLive:
		s.count.Add(1)
	case wasLive && !isLive:
		s.count.Add(-1)
	}
	for n := e.Seen.UnixNano(); ; {
		l := s.latest.Load()
		if n <= l || s.latest.CompareAndSwap(l, n) {
			break
		}
	}
	return nil
}

// Lookup returns addr's entry if it is suppressed now.
func (s *Suppressions) Lookup(addr string) (Suppression, bool) {
	return s.get(normalizeAddress(addr))
}

// Hit is Lookup for a message about to be bounced because of the entry:
// it also counts the hit (an unsynced write).
func (s *Suppressions) Hit(addr string) (Suppression, bool) {
	k := normalizeAddress(addr)
	if _, ok := s.get(k); !ok {
		return Suppression{}, false
	}
	mu := s.lock(k)
	mu.Lock()
	defer mu.Unlock()
	e, ok := s.rawLocked(k) // again under the lock: a merge may have come first
	if !ok || e.Removed {
		return Suppression{}, false
	}
	e.Hits++
	_ = s.put(e, false)
	return e, true
}

// get returns the entry in force for key k.
func (s *Suppressions) get(k string) (Suppression, bool) {
	e, ok := s.raw(k)
	if !ok || e.Removed {
		return Suppression{}, false
	}
	return e, true
}

// raw returns k's unexpired version, a tombstone included; an expired one
// is deleted unless a writer holds k's lock.
func (s *Suppressions) raw(k string) (Suppression, bool) {
	e, ok, expired := s.read(k)
	if expired {
		mu := s.lock(k)
		if mu.TryLock() { // else a writer replaces it anyway
			s.rawLocked(k)
			mu.Unlock()
		}
	}
	return e, ok
}

// rawLocked is raw for a caller holding k's lock: an expired version is
// deleted (and uncounted) before the caller writes its own.
func (s *Suppressions) rawLocked(k string) (Suppression, bool) {
	e, ok, expired := s.read(k)
	if expired && s.store.Delete(k) == nil && !e.Removed {
		s.count.Add(-1)
	}
	return e, ok
}

// read decodes k's stored version: ok when it is in force (or a tombstone
// not yet due), expired when it is stored but past Expires.
func (s *Suppressions) read(k string) (e Suppression, ok, expired bool) {
	v, found, err := s.store.Get(k)
	if err != nil || !found || json.Unmarshal(v, &e) != nil {
		return Suppression{}, false, false
	}
	if !s.now().Before(e.Expires) {
		return e, false, true
	}
	return e, true, false
}

func (s *Suppressions) put(e Suppression, sync bool) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return s.store.Put(e.Address, v, sync)
}

// List returns the entries in force, ordered by address. It reads the
// whole list (admin interface).
func (s *Suppressions) List() []Suppression {
	t := s.now()
	var out []Suppression
	_ = s.store.Walk(func(_ string, v []byte) bool {
		var e Suppression
		if json.Unmarshal(v, &e) == nil && t.Before(e.Expires) && !e.Removed {
			out = append(out, e)
		}
		return true
	})
	slices.SortFunc(out, func(a, b Suppression) int { return strings.Compare(a.Address, b.Address) })
	return out
}

// Changes returns up to limit versions (tombstones included) this relay
// stored after since, of addresses after the address after, in address
// order: a page of what a member that last caught up at since has
// missed. Pass the last address of a page as after for the next page; a
// page shorter than limit is the last. When nothing was stored after
// since it answers at once, without reading the store.
func (s *Suppressions) Changes(since time.Time, after string, limit int) ([]Suppression, error) {
	if limit <= 0 {
		return nil, errors.New("suppression changes: limit must be positive")
	}
	if !since.IsZero() && since.UnixNano() >= s.latest.Load() {
		return nil, nil
	}
	t := s.now()
	var out []Suppression
	walk := func(fn func(string, []byte) bool) error {
		return s.store.Walk(func(k string, v []byte) bool { return k <= after || fn(k, v) })
	}
	if ws, ok := s.store.(interface {
		WalkAfter(string, func(string, []byte) bool) error
	}); ok {
		walk = func(fn func(string, []byte) bool) error { return ws.WalkAfter(after, fn) }
	}
	err := walk(func(k string, v []byte) bool {
		var e Suppression
		if json.Unmarshal(v, &e) == nil && t.Before(e.Expires) && e.seen().After(since) {
			out = append(out, e)
		}
		return len(out) < limit
	})
	return out, err
}

// Count is the number of addresses suppressed, as of the last Sweep plus
// the changes since (entries that expired unread are counted until the
// next Sweep).
func (s *Suppressions) Count() int { return int(s.count.Load()) }

// Sweep reads the whole list: it deletes expired entries and tombstones
// and counts the entries in force again.
func (s *Suppressions) Sweep() error {
	t := s.now()
	var expired []string
	var n, latest int64
	err := s.store.Walk(func(k string, v []byte) bool {
		var e Suppression
		if json.Unmarshal(v, &e) != nil {
			return true
		}
		if !t.Before(e.Expires) {
			expired = append(expired, k)
			return true
		}
		if !e.Removed {
			n++
		}
		latest = max(latest, e.seen().UnixNano())
		return true
	})
	if err != nil {
		return err
	}
	for _, k := range expired {
		s.raw(k)
	}
	s.count.Store(n)
	for {
		l := s.latest.Load()
		if latest <= l || s.latest.CompareAndSwap(l, latest) {
			break
		}
	}
	return nil
}

// Flush is kept for callers from when the list was a file; every change is
// written when it happens.
func (s *Suppressions) Flush() error { return nil }

// memoryStore is a SuppressionStore in memory (tests, and relays without
// a store).
type memoryStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (m *memoryStore) Get(k string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[k]
	return v, ok, nil
}

func (m *memoryStore) Put(k string, v []byte, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m[k] = v
	return nil
}

func (m *memoryStore) Delete(k string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, k)
	return nil
}

func (m *memoryStore) Walk(fn func(string, []byte) bool) error {
	m.mu.Lock()
	keys := make([]string, 0, len(m.m))
	for k := range m.m {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		m.mu.Lock()
		v, ok := m.m[k]
		m.mu.Unlock()
		if ok && !fn(k, v) {
			return nil
		}
	}
	return nil
}
