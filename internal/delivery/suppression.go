package delivery

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// SuppressionFile is the name of the suppression list in its directory.
const SuppressionFile = "suppressions.json"

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

// Suppressions is a pool's list of recipients whose delivery failed
// permanently with a "no such user" class reply. Until an entry expires,
// mail to the address is bounced at once without contacting the remote
// server, which protects the relay's reputation (repeatedly mailing
// non-existent users is what spam traps look for).
//
// The list lives in memory and, when opened with a directory, in a JSON
// file there that is replaced atomically (temporary file, fsync, rename,
// directory fsync) on every change, so it survives restarts and crashes.
// Hit counts are saved with the next change or Flush. It is safe for
// concurrent use.
type Suppressions struct {
	dir string
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*Suppression
	dirty   bool // hits not yet saved
}

type suppressionFile struct {
	Version int           `json:"version"`
	Entries []Suppression `json:"entries"`
}

// OpenSuppressions loads the list from dir (created if missing; "" keeps
// the list in memory only). Entries added later last ttl. now is the clock
// (nil: time.Now).
func OpenSuppressions(dir string, ttl time.Duration, now func() time.Time) (*Suppressions, error) {
	if ttl <= 0 {
		return nil, errors.New("suppression ttl must be positive")
	}
	if now == nil {
		now = time.Now
	}
	s := &Suppressions{dir: dir, ttl: ttl, now: now, entries: map[string]*Suppression{}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, SuppressionFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var f suppressionFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, SuppressionFile), err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("%s: unknown version %d", filepath.Join(dir, SuppressionFile), f.Version)
	}
	t := now()
	for _, e := range f.Entries {
		if t.Before(e.Expires) {
			e := e
			s.entries[normalizeAddress(e.Address)] = &e
		}
	}
	return s, nil
}

func normalizeAddress(a string) string { return strings.ToLower(strings.TrimSpace(a)) }

// Add suppresses addr because of reply (from host). Adding an address that
// is already suppressed renews it.
func (s *Suppressions) Add(addr, reply, host string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := normalizeAddress(addr)
	t := s.now()
	e, ok := s.entries[k]
	if !ok {
		e = &Suppression{Address: k}
		s.entries[k] = e
	}
	e.Reply, e.RemoteHost, e.Added, e.Expires = reply, host, t, t.Add(s.ttl)
	return s.save()
}

// Remove lifts the suppression of addr; it reports whether there was one.
func (s *Suppressions) Remove(addr string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := normalizeAddress(addr)
	if _, ok := s.entries[k]; !ok {
		return false, nil
	}
	delete(s.entries, k)
	return true, s.save()
}

// Lookup returns addr's entry if it is suppressed now.
func (s *Suppressions) Lookup(addr string) (Suppression, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(normalizeAddress(addr))
	if !ok {
		return Suppression{}, false
	}
	return *e, true
}

// Hit is Lookup for a message about to be bounced because of the entry:
// it also counts the hit.
func (s *Suppressions) Hit(addr string) (Suppression, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.live(normalizeAddress(addr))
	if !ok {
		return Suppression{}, false
	}
	e.Hits++
	s.dirty = true
	return *e, true
}

func (s *Suppressions) live(k string) (*Suppression, bool) {
	e, ok := s.entries[k]
	if !ok {
		return nil, false
	}
	if !s.now().Before(e.Expires) {
		delete(s.entries, k)
		return nil, false
	}
	return e, true
}

// List returns the entries in force, ordered by address.
func (s *Suppressions) List() []Suppression {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.now()
	var out []Suppression
	for _, e := range s.entries {
		if t.Before(e.Expires) {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b Suppression) int { return strings.Compare(a.Address, b.Address) })
	return out
}

// Flush saves hit counts not yet on disk.
func (s *Suppressions) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil
	}
	return s.save()
}

// save writes the list atomically; s.mu is held.
func (s *Suppressions) save() error {
	if s.dir == "" {
		s.dirty = false
		return nil
	}
	t := s.now()
	f := suppressionFile{Version: 1, Entries: []Suppression{}}
	for _, e := range s.entries {
		if t.Before(e.Expires) {
			f.Entries = append(f.Entries, *e)
		}
	}
	slices.SortFunc(f.Entries, func(a, b Suppression) int { return strings.Compare(a.Address, b.Address) })
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.dir, SuppressionFile, append(data, '\n')); err != nil {
		return fmt.Errorf("saving suppression list: %w", err)
	}
	s.dirty = false
	return nil
}

// writeFileAtomic replaces dir/name with data so that after a crash the
// file holds either the old or the new content, never a mix: write a
// temporary file, fsync it, rename it over the old one, fsync the
// directory.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
