package delivery

import (
	"sync"
	"time"
)

// HostDown remembers, briefly, which servers could not be reached, so that
// a queue of thousands of messages for a dead destination costs one
// connection attempt per server per period instead of one per message.
// Keys are "ip:port". It is safe for concurrent use.
type HostDown struct {
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	down map[string]downEntry
}

type downEntry struct {
	until  time.Time
	reason string
}

// NewHostDown returns a memory that keeps a server marked down for ttl.
// now is the clock (nil: time.Now).
func NewHostDown(ttl time.Duration, now func() time.Time) *HostDown {
	if now == nil {
		now = time.Now
	}
	return &HostDown{ttl: ttl, now: now, down: map[string]downEntry{}}
}

// Mark records that addr could not be reached, and why.
func (h *HostDown) Mark(addr, reason string) {
	if h.ttl <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down[addr] = downEntry{until: h.now().Add(h.ttl), reason: reason}
}

// Clear forgets addr: it answered.
func (h *HostDown) Clear(addr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.down, addr)
}

// Down reports whether addr is remembered as down, with the reason and
// until when.
func (h *HostDown) Down(addr string) (reason string, until time.Time, down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.down[addr]
	if !ok {
		return "", time.Time{}, false
	}
	if !h.now().Before(e.until) {
		delete(h.down, addr)
		return "", time.Time{}, false
	}
	return e.reason, e.until, true
}
