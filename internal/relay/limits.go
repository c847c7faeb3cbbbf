package relay

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"mailroom.io/mailroom/internal/relay/config"
)

// trackedConn is an accepted connection counted against the connection
// limits until it is closed. busy is set while a mail transaction is in
// progress, so a graceful shutdown can end idle sessions and let busy ones
// finish.
type trackedConn struct {
	net.Conn
	ip       netip.Addr
	listener string
	busy     atomic.Bool
	closed   atomic.Bool
	onDone   func(*trackedConn)
	// rejects meters the refusals logged for this connection.
	rejects rejectLog
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.onDone(c)
	}
	return err
}

// unwrapTracked finds the trackedConn under a (possibly TLS) connection.
func unwrapTracked(c net.Conn) *trackedConn {
	for {
		switch v := c.(type) {
		case *trackedConn:
			return v
		case *wireConn:
			return v.tc
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// connTable counts connections overall and per client address.
type connTable struct {
	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
	conns map[*trackedConn]struct{}
	empty chan struct{} // closed and replaced when total drops to 0
}

func newConnTable() *connTable {
	return &connTable{perIP: map[netip.Addr]int{}, conns: map[*trackedConn]struct{}{}, empty: make(chan struct{})}
}

// add admits c unless a limit is reached.
func (t *connTable) add(c *trackedConn, maxTotal, maxPerIP int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total >= maxTotal || t.perIP[c.ip] >= maxPerIP {
		return false
	}
	t.total++
	t.perIP[c.ip]++
	t.conns[c] = struct{}{}
	return true
}

func (t *connTable) remove(c *trackedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.conns[c]; !ok {
		return
	}
	delete(t.conns, c)
	t.total--
	if t.perIP[c.ip]--; t.perIP[c.ip] <= 0 {
		delete(t.perIP, c.ip)
	}
	if t.total == 0 {
		close(t.empty)
		t.empty = make(chan struct{})
	}
}

func (t *connTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// idleDeadline makes every connection not in a transaction time out now:
// its session reads the deadline, answers 421 and ends. Busy ones are left
// to finish.
func (t *connTable) expireIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for c := range t.conns {
		if !c.busy.Load() {
			_ = c.SetReadDeadline(now)
		}
	}
}

func (t *connTable) closeAll() {
	t.mu.Lock()
	conns := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// waitEmpty returns a channel closed once no connection is left.
func (t *connTable) waitEmpty() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return t.empty
}

// authThrottle refuses AUTH from a client address that failed `failures`
// times within the last `window` (a sliding window: each failure counts
// for `window` after it happened). Failures are counted where they happen,
// when a password check fails, and every attempt holds a reservation from
// the moment AUTH starts until its check is done, across all the
// address's sessions: parallel connections cannot each get a guess
// checked, because no more checks run at once than failures are left.
// An attempt beyond that waits (up to a bound) for one in flight to end.
type authThrottle struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	ips   map[netip.Addr]*authRecord
	last  time.Time
}

type authRecord struct {
	fails    []time.Time // within the window, oldest first
	inFlight int
	wake     chan struct{} // closed when an attempt ends
}

func newAuthThrottle() *authThrottle {
	return &authThrottle{clock: clock.RealClock{}, ips: map[netip.Addr]*authRecord{}}
}

// begin reserves an attempt for ip, waiting up to wait while the attempts
// in flight would use up the failures left; false: refuse it.
func (a *authThrottle) begin(ip netip.Addr, failures int, window, wait time.Duration) bool {
	var timeout <-chan time.Time
	for {
		a.mu.Lock()
		r, ok := a.ips[ip]
		if !ok {
			r = &authRecord{wake: make(chan struct{})}
			a.ips[ip] = r
		}
		r.prune(a.clock.Now(), window)
		if len(r.fails) >= failures {
			a.mu.Unlock()
			return false
		}
		if len(r.fails)+r.inFlight < failures {
			r.inFlight++
			a.mu.Unlock()
			return true
		}
		wake := r.wake
		a.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-wake:
		case <-timeout:
			return false
		}
	}
}

// end releases a reservation; failed counts the attempt as a failure.
func (a *authThrottle) end(ip netip.Addr, failed bool, window time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	r, ok := a.ips[ip]
	if !ok {
		return
	}
	r.inFlight--
	if failed {
		r.fails = append(r.fails, now)
	}
	close(r.wake)
	r.wake = make(chan struct{})
	// Forget addresses with nothing to remember, at most once a minute.
	if now.Sub(a.last) > time.Minute {
		a.last = now
		for ip, r := range a.ips {
			if r.prune(now, window); r.inFlight == 0 && len(r.fails) == 0 {
				delete(a.ips, ip)
			}
		}
	}
}

// prune drops failures older than window.
func (r *authRecord) prune(now time.Time, window time.Duration) {
	i := 0
	for i < len(r.fails) && !r.fails[i].After(now.Add(-window)) {
		i++
	}
	r.fails = r.fails[i:]
}

// senderLimiter enforces one credential's or network's message rates.
type senderLimiter struct {
	limits    config.SenderLimits
	perMinute *rate.Limiter
	perDay    *rate.Limiter
}

func newSenderLimiter(l config.SenderLimits) *senderLimiter {
	s := &senderLimiter{limits: l}
	if l.MessagesPerMinute > 0 {
		s.perMinute = rate.NewLimiter(rate.Limit(float64(l.MessagesPerMinute)/60), l.MessagesPerMinute)
	}
	if l.MessagesPerDay > 0 {
		s.perDay = rate.NewLimiter(rate.Limit(float64(l.MessagesPerDay)/86400), l.MessagesPerDay)
	}
	return s
}

// allow takes one message from both budgets, or from neither; it returns
// the name of the exhausted budget.
func (s *senderLimiter) allow() (ok bool, which string) {
	now := time.Now()
	var taken *rate.Reservation
	if s.perMinute != nil {
		r := s.perMinute.ReserveN(now, 1)
		if !r.OK() || r.DelayFrom(now) > 0 {
			r.CancelAt(now)
			return false, "messagesPerMinute"
		}
		taken = r
	}
	if s.perDay != nil {
		r := s.perDay.ReserveN(now, 1)
		if !r.OK() || r.DelayFrom(now) > 0 {
			r.CancelAt(now)
			if taken != nil {
				taken.CancelAt(now)
			}
			return false, "messagesPerDay"
		}
	}
	return true, ""
}

// limiterSet keeps sender limiters across config reloads, so a reload does
// not hand everyone a fresh budget; a limiter is replaced only when its
// limits change.
type limiterSet struct {
	mu sync.Mutex
	m  map[string]*senderLimiter
}

func (ls *limiterSet) get(key string, l config.SenderLimits) *senderLimiter {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.m == nil {
		ls.m = map[string]*senderLimiter{}
	}
	s, ok := ls.m[key]
	if !ok || s.limits != l {
		s = newSenderLimiter(l)
		ls.m[key] = s
	}
	return s
}

// retain drops limiters whose owner left the config.
func (ls *limiterSet) retain(keep map[string]bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for k := range ls.m {
		if !keep[k] {
			delete(ls.m, k)
		}
	}
}
