package delivery

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// pool keeps sessions per destination (a recipient domain, or the
// smarthost) for reuse, and limits how many connections a destination may
// have open at once (maxConnectionsPerDomain). A connection counts against
// the limit from the moment it is dialled until it is closed, idle or not.
type pool struct {
	max         int
	idleTimeout time.Duration
	maxUses     int
	now         func() time.Time
	closeFn     func(*session) // closes a session that leaves the pool

	mu     sync.Mutex
	dests  map[string]*destination
	closed bool
}

type destination struct {
	open    int        // dialling, busy or idle
	idle    []*session // most recently used last
	waiting int        // deliveries waiting for a slot
	// wake is closed (and replaced) whenever a slot or an idle session
	// becomes available.
	wake chan struct{}
}

func newPool(max int, idleTimeout time.Duration, maxUses int, now func() time.Time, closeFn func(*session)) *pool {
	return &pool{max: max, idleTimeout: idleTimeout, maxUses: maxUses, now: now, closeFn: closeFn, dests: map[string]*destination{}}
}

func (p *pool) dest(key string) *destination {
	d, ok := p.dests[key]
	if !ok {
		d = &destination{wake: make(chan struct{})}
		p.dests[key] = d
	}
	return d
}

// get returns an idle session for key that usable accepts, or (nil, nil)
// with a slot reserved for dialling a new one; it waits while the
// destination is at its limit. Idle sessions that are too old or not
// usable are closed to make room.
func (p *pool) get(ctx context.Context, key string, usable func(*session) bool) (*session, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		d := p.dest(key)
		var discard []*session
		var found *session
		for len(d.idle) > 0 {
			s := d.idle[len(d.idle)-1]
			d.idle = d.idle[:len(d.idle)-1]
			if p.now().Sub(s.lastUsed) < p.idleTimeout && usable(s) {
				found = s
				break
			}
			discard = append(discard, s)
			d.open--
		}
		if found == nil && d.open < p.max {
			d.open++
			p.mu.Unlock()
			p.closeAll(discard)
			return nil, nil
		}
		if found != nil {
			p.mu.Unlock()
			p.closeAll(discard)
			return found, nil
		}
		wake := d.wake
		d.waiting++
		p.mu.Unlock()
		p.closeAll(discard)
		select {
		case <-wake:
		case <-ctx.Done():
		}
		p.mu.Lock()
		d.waiting--
		p.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// put returns a session after use: kept idle for reuse when reusable,
// closed otherwise.
func (p *pool) put(key string, s *session, reusable bool) {
	p.mu.Lock()
	d := p.dest(key)
	keep := reusable && !p.closed && s.uses < p.maxUses
	if keep {
		s.lastUsed = p.now()
		d.idle = append(d.idle, s)
	} else {
		d.open--
	}
	p.signal(d)
	p.mu.Unlock()
	if !keep {
		p.closeFn(s)
	}
}

// release gives back a slot from get whose dial failed.
func (p *pool) release(key string) {
	p.mu.Lock()
	d := p.dest(key)
	d.open--
	p.signal(d)
	p.mu.Unlock()
}

// signal wakes waiters; p.mu is held.
func (p *pool) signal(d *destination) {
	close(d.wake)
	d.wake = make(chan struct{})
}

// expire closes idle sessions unused for idleTimeout, so remote servers
// are not left holding connections we will not use.
func (p *pool) expire() {
	p.mu.Lock()
	var discard []*session
	for key, d := range p.dests {
		keep := d.idle[:0]
		for _, s := range d.idle {
			if p.now().Sub(s.lastUsed) < p.idleTimeout {
				keep = append(keep, s)
			} else {
				discard = append(discard, s)
				d.open--
			}
		}
		d.idle = keep
		if len(discard) > 0 {
			p.signal(d)
		}
		if d.open == 0 && d.waiting == 0 {
			delete(p.dests, key)
		}
	}
	p.mu.Unlock()
	p.closeAll(discard)
}

// close closes every idle session and makes get fail from now on; busy
// sessions are closed when they are put back.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var discard []*session
	for _, d := range p.dests {
		discard = append(discard, d.idle...)
		d.open -= len(d.idle)
		d.idle = nil
		p.signal(d)
	}
	p.mu.Unlock()
	p.closeAll(discard)
}

func (p *pool) closeAll(ss []*session) {
	for _, s := range ss {
		p.closeFn(s)
	}
}

// DestinationStats describe the connections of one destination.
type DestinationStats struct {
	// Destination is a recipient domain, or "smarthost".
	Destination string
	// Open connections (busy or idle), of which Idle are kept for reuse.
	Open, Idle int
	// Waiting deliveries wait for a connection because Open is at the
	// per-destination limit.
	Waiting int
}

func (p *pool) stats() []DestinationStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]DestinationStats, 0, len(p.dests))
	for key, d := range p.dests {
		out = append(out, DestinationStats{Destination: key, Open: d.open, Idle: len(d.idle), Waiting: d.waiting})
	}
	slices.SortFunc(out, func(a, b DestinationStats) int { return strings.Compare(a.Destination, b.Destination) })
	return out
}
