package delivery

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Suppression is one suppressed recipient.
type Suppression struct {
	Address string `json:"address"`
	// Reply is the remote server's reply that suppressed the address.
	Reply      string    `json:"reply"`
	RemoteHost string    `json:"remoteHost,omitempty"`
	Added      time.Time `json:"added"`
	Expires    time.Time `json:"expires"`
	// Hits counts the messages bounced at once because of this entry.
	Hits int `json:"hits"`
}

// SuppressionStore keeps the entries, one key per address: the relay's
// queue store (queue.Queue.Suppressions). Put with sync false may lose
// the write in a crash (hit counts).
type SuppressionStore interface {
	Get(key string) ([]byte, bool, error)
	Put(key string, value []byte, sync bool) error
	Delete(key string) error
	Walk(fn func(key string, value []byte) bool) error
}

// Suppressions is a pool's list of recipients whose delivery failed
// permanently with a "no such user" class reply. Until an entry expires,
// mail to the address is bounced at once without contacting the remote
// server, which protects the relay's reputation (repeatedly mailing
// non-existent users is what spam traps look for).
//
// Each entry is one key in the store, so adding, lifting and looking up
// an address cost one write or read whatever the size of the list, and no
// lock is shared between recipients. It is safe for concurrent use.
type Suppressions struct {
	store SuppressionStore
	ttl   time.Duration
	now   func() time.Time
}

// NewSuppressions returns the list kept in store (nil: in memory only).
// Entries added later last ttl. now is the clock (nil: time.Now).
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
	return &Suppressions{store: store, ttl: ttl, now: now}, nil
}

func normalizeAddress(a string) string { return strings.ToLower(strings.TrimSpace(a)) }

// Add suppresses addr because of reply (from host). Adding an address that
// is already suppressed renews it.
func (s *Suppressions) Add(addr, reply, host string) error {
	k := normalizeAddress(addr)
	t := s.now()
	e := Suppression{Address: k, Reply: reply, RemoteHost: host, Added: t, Expires: t.Add(s.ttl)}
	if old, ok := s.get(k); ok {
		e.Hits = old.Hits
	}
	if err := s.put(e, true); err != nil {
		return fmt.Errorf("saving suppression: %w", err)
	}
	return nil
}

// Remove lifts the suppression of addr; it reports whether there was one.
func (s *Suppressions) Remove(addr string) (bool, error) {
	k := normalizeAddress(addr)
	if _, ok := s.get(k); !ok {
		return false, nil
	}
	return true, s.store.Delete(k)
}

// Lookup returns addr's entry if it is suppressed now.
func (s *Suppressions) Lookup(addr string) (Suppression, bool) {
	return s.get(normalizeAddress(addr))
}

// Hit is Lookup for a message about to be bounced because of the entry:
// it also counts the hit (an unsynced write).
func (s *Suppressions) Hit(addr string) (Suppression, bool) {
	e, ok := s.get(normalizeAddress(addr))
	if !ok {
		return Suppression{}, false
	}
	e.Hits++
	_ = s.put(e, false)
	return e, true
}

// get returns the entry in force for key k; an expired one is deleted.
func (s *Suppressions) get(k string) (Suppression, bool) {
	v, ok, err := s.store.Get(k)
	if err != nil || !ok {
		return Suppression{}, false
	}
	var e Suppression
	if json.Unmarshal(v, &e) != nil {
		return Suppression{}, false
	}
	if !s.now().Before(e.Expires) {
		_ = s.store.Delete(k)
		return Suppression{}, false
	}
	return e, true
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
		if json.Unmarshal(v, &e) == nil && t.Before(e.Expires) {
			out = append(out, e)
		}
		return true
	})
	slices.SortFunc(out, func(a, b Suppression) int { return strings.Compare(a.Address, b.Address) })
	return out
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
