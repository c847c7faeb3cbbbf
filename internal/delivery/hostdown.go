package delivery

import (
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// HostDown remembers, briefly, which servers could not be reached, so that
// a queue of thousands of messages for a dead destination costs one
// connection attempt per server per period instead of one per message.
// Keys are "ip:port". Entries expire on their own (an expiring LRU of at
// most hostDownEntries), so the memory is bounded however many servers
// fail. It is safe for concurrent use.
type HostDown struct {
	ttl  time.Duration
	now  func() time.Time
	down *expirable.LRU[string, downEntry]
}

type downEntry struct {
	until  time.Time
	reason string
}

// hostDownEntries bounds the servers remembered; beyond it the least
// recently marked are forgotten first (and tried again, which is safe).
const hostDownEntries = 10000

// NewHostDown returns a memory that keeps a server marked down for ttl.
// now is the clock (nil: time.Now).
func NewHostDown(ttl time.Duration, now func() time.Time) *HostDown {
	if now == nil {
		now = time.Now
	}
	// The LRU's own expiry runs on real time and only frees memory; Down
	// decides with now, so tests can move the clock.
	return &HostDown{ttl: ttl, now: now, down: expirable.NewLRU[string, downEntry](hostDownEntries, nil, max(ttl, time.Second))}
}

// Mark records that addr could not be reached, and why.
func (h *HostDown) Mark(addr, reason string) {
	if h.ttl <= 0 {
		return
	}
	h.down.Add(addr, downEntry{until: h.now().Add(h.ttl), reason: reason})
}

// Clear forgets addr: it answered.
func (h *HostDown) Clear(addr string) { h.down.Remove(addr) }

// Down reports whether addr is remembered as down, with the reason and
// until when.
func (h *HostDown) Down(addr string) (reason string, until time.Time, down bool) {
	e, ok := h.down.Peek(addr)
	if !ok {
		return "", time.Time{}, false
	}
	if !h.now().Before(e.until) {
		h.down.Remove(addr)
		return "", time.Time{}, false
	}
	return e.reason, e.until, true
}

// Len is the number of servers remembered (for tests and the admin
// interface).
func (h *HostDown) Len() int { return h.down.Len() }
