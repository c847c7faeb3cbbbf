package relay

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

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

// authThrottle refuses AUTH from a client address after too many failures
// in a window: a token bucket per address holding `failures` tokens that
// refill over `window`; each failure takes one.
type authThrottle struct {
	mu   sync.Mutex
	ips  map[netip.Addr]*rate.Limiter
	last time.Time
}

func newAuthThrottle() *authThrottle {
	return &authThrottle{ips: map[netip.Addr]*rate.Limiter{}}
}

func throttleRate(failures int, window time.Duration) rate.Limit {
	return rate.Limit(float64(failures) / window.Seconds())
}

// blocked reports whether ip has used up its failures.
func (a *authThrottle) blocked(ip netip.Addr, failures int, window time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.ips[ip]
	if !ok {
		return false
	}
	l.SetLimit(throttleRate(failures, window))
	l.SetBurst(failures)
	return l.Tokens() < 1
}

// fail records a failure from ip.
func (a *authThrottle) fail(ip netip.Addr, failures int, window time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	l, ok := a.ips[ip]
	if !ok {
		l = rate.NewLimiter(throttleRate(failures, window), failures)
		a.ips[ip] = l
	}
	l.AllowN(now, 1)
	// Forget addresses whose bucket has refilled, at most once a minute.
	if now.Sub(a.last) > time.Minute {
		a.last = now
		for ip, l := range a.ips {
			if l.TokensAt(now) >= float64(l.Burst()) {
				delete(a.ips, ip)
			}
		}
	}
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
