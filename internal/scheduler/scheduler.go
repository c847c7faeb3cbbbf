package scheduler

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
)

// Deliverer is what the scheduler needs of the delivery engine
// (*delivery.Deliverer).
type Deliverer interface {
	Deliver(ctx context.Context, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result
}

// Options configure a Scheduler.
type Options struct {
	Queue     *queue.Queue
	Deliverer Deliverer
	Retry     delivery.RetryPolicy
	// Hostname is the Reporting-MTA of DSNs.
	Hostname string
	// Concurrency bounds attempts in progress; default 100.
	Concurrency int
	// PerDestination bounds attempts in progress per destination (a
	// recipient domain; everything is one destination with Smarthost):
	// the delivery engine's maxConnectionsPerDomain, so an attempt never
	// waits for a connection while holding a worker. Default 10.
	PerDestination int
	// Smarthost: all mail goes through one upstream server.
	Smarthost bool
	// Paused: deliver nothing until SetPaused(false).
	Paused bool
	// HistoryLimit bounds the attempts kept per message; default 50.
	HistoryLimit int
	// Sign, when set, returns the DKIM-Signature fields for a DSN the
	// relay sends ("" when it holds no key for the DSN's From: domain).
	Sign    func(msg []byte) (string, error)
	Metrics *Metrics
	Logger  *slog.Logger
	// Events, when set, records delivery events with each outcome (record.go).
	Events EventSink
	// Now and Rand are the clock and the jitter's randomness; defaults
	// time.Now and math/rand/v2.
	Now  func() time.Time
	Rand func() float64
}

// Scheduler delivers the queue. Start it with Start; stop it with
// Shutdown before closing the queue.
type Scheduler struct {
	opts Options
	q    *queue.Queue
	log  *slog.Logger
	m    *Metrics

	deliverCtx    context.Context
	cancelDeliver context.CancelFunc
	stop          chan struct{}
	loopDone      chan struct{}
	wake          chan struct{}
	workers       sync.WaitGroup
	stopOnce      sync.Once

	mu sync.Mutex
	// inflight: messages with an attempt in progress or an outcome not yet
	// written (parked). RAM holds only these, never the queue.
	inflight map[string]bool
	busy     map[string]int // attempts in progress per destination
	// waiting: fresh messages of one destination, leased at intake while
	// it was at its cap, in arrival order; they are in inflight too (no
	// pass of the due index takes them) but hold no worker. nWaiting is
	// their total, at most maxWaiting.
	waiting  map[string][]leased
	nWaiting int
	dests    map[string]*destState // destinations with attempts in progress
	paused   bool
	// accepting: Start ran and Shutdown did not; fresh messages may be
	// leased in their intake commit (admitFresh).
	accepting bool
	retry     delivery.RetryPolicy
	// writeBlocked: a lease could not be written (disk full); nothing is
	// attempted before this time.
	writeBlocked time.Time
	writeBackoff time.Duration

	locks [64]sync.Mutex // per-message write locks, by hash of the id
}

// New returns a scheduler; it does nothing until Start.
func New(opts Options) (*Scheduler, error) {
	if opts.Queue == nil || opts.Deliverer == nil {
		return nil, errors.New("scheduler: Queue and Deliverer are required")
	}
	if opts.Hostname == "" {
		return nil, errors.New("scheduler: Hostname is required")
	}
	if err := opts.Retry.Validate(); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 100
	}
	if opts.PerDestination <= 0 {
		opts.PerDestination = 10
	}
	if opts.HistoryLimit <= 0 {
		opts.HistoryLimit = 50
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		opts: opts, q: opts.Queue, log: opts.Logger, m: opts.Metrics,
		deliverCtx: ctx, cancelDeliver: cancel,
		stop: make(chan struct{}), loopDone: make(chan struct{}), wake: make(chan struct{}, 1),
		inflight: map[string]bool{}, busy: map[string]int{}, dests: map[string]*destState{}, waiting: map[string][]leased{},
		paused: opts.Paused, retry: opts.Retry,
	}
	s.m.observe(s)
	return s, nil
}

// Start begins delivering.
func (s *Scheduler) Start() {
	s.mu.Lock()
	s.accepting = true
	s.mu.Unlock()
	s.q.SetIntakeHook(s.admitFresh)
	go s.loop()
}

// SetPaused pauses or resumes delivery (delivery.paused, reloadable).
// Attempts in progress finish either way.
func (s *Scheduler) SetPaused(p bool) {
	s.mu.Lock()
	s.paused = p
	s.mu.Unlock()
	s.Wake()
}

// SetRetry replaces the retry policy (reloadable); it applies from the
// next outcome on.
func (s *Scheduler) SetRetry(p delivery.RetryPolicy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.retry = p
	s.mu.Unlock()
	return nil
}

func (s *Scheduler) retryPolicy() delivery.RetryPolicy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retry
}

// Wake makes the scheduler look for due messages now.
func (s *Scheduler) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Shutdown stops starting attempts and waits for those in progress until
// ctx ends; then it cuts them off and waits for their (cut-off) outcomes
// to be written. The queue stays open: closing it is the caller's.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.q.SetIntakeHook(nil)
	s.mu.Lock()
	s.accepting = false // before Wait: admitFresh adds no worker after it
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.loopDone
	s.unwait()
	done := make(chan struct{})
	go func() {
		s.workers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.log.Warn("scheduler: shutdown deadline reached; cutting off deliveries in progress", "inflight", s.inflightCount())
		s.cancelDeliver()
		<-done
	}
	s.cancelDeliver()
	return err
}

func (s *Scheduler) inflightCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight)
}

// idleCheck bounds how long the loop sleeps without a known due time, in
// case a message's time was changed under it (admin) without a Wake.
const idleCheck = 30 * time.Second

func (s *Scheduler) loop() {
	defer close(s.loopDone)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		start := time.Now()
		next := s.dispatch()
		s.m.dispatchSeconds.Observe(time.Since(start).Seconds())
		wait := idleCheck
		if !next.IsZero() {
			wait = min(max(next.Sub(s.opts.Now()), 0), idleCheck)
		}
		timer.Reset(wait)
		select {
		case <-s.stop:
			return
		case <-s.q.Added():
		case <-s.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// dispatchPage is how many due-index entries one query reads; scanLimit
// bounds the entries one pass looks at, so a pass costs the same however
// long the queue is.
const (
	dispatchPage = 256
	scanLimit    = 4096
)

// Busy destinations: a message whose destination is at its cap is moved
// ahead instead of holding a worker or being looked at again by every
// pass. For a destination that is flowing, the i-th such message is moved
// to when a slot should be free for it (i times the destination's mean
// time between finished attempts); for one that has finished nothing for
// stalledAfter, by a delay doubling per pass from minBusyDelay up to
// maxBusyDelay.
const (
	minBusyDelay = 2 * time.Second
	maxBusyDelay = 10 * time.Second
	stalledAfter = 5 * time.Second
	// firstGuess is the spacing before anything finished.
	firstGuess = 10 * time.Millisecond
)

// destState is what the scheduler knows of a destination while it has
// attempts in progress.
type destState struct {
	since    time.Time     // first attempt in progress started
	lastDone time.Time     // last attempt finished
	interval time.Duration // mean time between finished attempts (EWMA); 0: none yet
	backoff  time.Duration // stalled: how far skipped messages move
}

// active is when the destination last showed progress.
func (d *destState) active() time.Time {
	if d.lastDone.After(d.since) {
		return d.lastDone
	}
	return d.since
}

// dispatch starts attempts for due messages, as many as the concurrency
// and the per-destination caps allow, and returns when the next message
// falls due (zero: unknown).
func (s *Scheduler) dispatch() time.Time {
	now := s.opts.Now()
	s.mu.Lock()
	if s.paused {
		s.mu.Unlock()
		return time.Time{}
	}
	if now.Before(s.writeBlocked) {
		s.mu.Unlock()
		return s.writeBlocked
	}
	s.startWaiting(now)
	free := s.opts.Concurrency - (len(s.inflight) - s.nWaiting)
	s.mu.Unlock()
	if free <= 0 {
		return time.Time{} // a finishing worker wakes the loop
	}
	var (
		cursor  queue.Due
		next    time.Time
		scanned int
		skipped = map[string][]queue.Due{} // busy destination -> its due messages seen
	)
	for free > 0 && scanned < scanLimit {
		due, n, err := s.q.DueBefore(now, cursor, dispatchPage)
		if err != nil {
			if !errors.Is(err, queue.ErrClosed) {
				s.log.Error("scheduler: reading the due index", "err", err)
			}
			return now.Add(time.Second)
		}
		next = n
		for _, d := range due {
			cursor = d
			scanned++
			if free == 0 {
				next = now
				break
			}
			s.mu.Lock()
			in := s.inflight[d.ID]
			s.mu.Unlock()
			if in {
				continue
			}
			m, ok := s.q.Get(d.ID)
			if !ok {
				s.q.DropDue(d) // its record was lost (quarantined or corrupt)
				continue
			}
			if m.Held || !m.NextAttempt.Equal(d.At) && m.NextAttempt.After(now) {
				continue // changed since the index was read
			}
			dests := s.destinations(&m)
			s.mu.Lock()
			full := ""
			for _, dst := range dests {
				if s.busy[dst] >= s.opts.PerDestination {
					full = dst
					break
				}
			}
			if full != "" {
				s.mu.Unlock()
				skipped[full] = append(skipped[full], d)
				continue
			}
			s.inflight[m.ID] = true
			s.take(dests, now)
			s.mu.Unlock()
			free--
			s.workers.Add(1)
			go s.attempt(m, dests, nil)
		}
		if len(due) < dispatchPage || free == 0 {
			break
		}
	}
	if scanned >= scanLimit {
		next = now
	}
	s.postponeBusy(now, skipped)
	return next
}

// postponeBusy moves messages of destinations at their cap out of the due
// range for a while. The write is not synced: losing it in a crash only
// makes the message due earlier.
func (s *Scheduler) postponeBusy(now time.Time, skipped map[string][]queue.Due) {
	for dst, ds := range skipped {
		s.mu.Lock()
		st := s.dests[dst]
		var spacing, stalled time.Duration
		switch {
		case st == nil:
			spacing = firstGuess
		case now.Sub(st.active()) >= stalledAfter:
			st.backoff = min(max(2*st.backoff, minBusyDelay), maxBusyDelay)
			stalled = st.backoff
		case st.interval > 0:
			spacing = st.interval
		default:
			spacing = firstGuess
		}
		s.mu.Unlock()
		for i, due := range ds {
			at := now.Add(stalled + time.Duration(s.opts.Rand()*float64(stalled)/2))
			if stalled == 0 {
				// Half the mean spacing: ahead of the slots rather than
				// behind them, or the estimate would feed on its own delay.
				at = now.Add(min(time.Duration(i+1)*spacing/2, maxBusyDelay))
			}
			l := s.lock(due.ID)
			l.Lock()
			err := s.q.Postpone(due.ID, due.At, at)
			l.Unlock()
			if err != nil && !errors.Is(err, queue.ErrNotFound) {
				s.log.Warn("scheduler: postponing a message of a busy destination", "msgID", due.ID, "err", err)
			}
		}
		s.m.busySkips.Add(float64(len(ds)))
	}
}

// destinations are the keys the per-destination cap counts: the pending
// recipients' domains, or the smarthost.
func (s *Scheduler) destinations(m *queue.Message) []string {
	if s.opts.Smarthost {
		return []string{"smarthost"}
	}
	return m.Domains()
}

func (s *Scheduler) lock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

// admitFresh is the queue's intake hook (queue.SetIntakeHook). A message
// being committed by intake gets its attempt's lease in its own commit
// batch, and once committed goes straight to a worker: no due-index round
// trip and no separate lease write (one fsync less per message). The
// lease keeps the guarantee of lease(): a crash before or during the
// attempt makes the message due at the lease's next attempt, never at
// once. Without a free worker or destination slot the message is left
// unleased and comes due through the index as any other.
func (s *Scheduler) admitFresh(m *queue.Message) func(committed bool) {
	now := s.opts.Now().UTC()
	dests := s.destinations(m)
	s.mu.Lock()
	if !s.accepting || s.paused || now.Before(s.writeBlocked) {
		s.mu.Unlock()
		return nil
	}
	wait := len(s.inflight)-s.nWaiting >= s.opts.Concurrency
	for _, dst := range dests {
		if s.busy[dst] >= s.opts.PerDestination {
			wait = true
		}
	}
	if wait && (len(dests) != 1 || s.nWaiting >= maxWaiting) {
		// Only single-destination messages wait in memory, and only so
		// many; the rest go through the due index.
		s.mu.Unlock()
		return nil
	}
	s.inflight[m.ID] = true
	if wait {
		s.nWaiting++
	} else {
		s.take(dests, now)
		s.workers.Add(1)
	}
	policy := s.retry
	s.mu.Unlock()
	prev := m.NextAttempt
	s.setLease(policy, m, now)
	return func(committed bool) {
		l := leased{current: m.Clone(), next: prev}
		if committed {
			s.m.freshAdmits.Inc()
			if wait {
				s.mu.Lock()
				s.waiting[dests[0]] = append(s.waiting[dests[0]], l)
				s.mu.Unlock()
				s.Wake()
				return
			}
			go s.attempt(l.current, dests, &l)
			return
		}
		s.mu.Lock()
		delete(s.inflight, m.ID)
		if wait {
			s.nWaiting--
		} else {
			s.give(dests)
		}
		s.mu.Unlock()
		if !wait {
			s.workers.Done()
		}
	}
}

// maxWaiting bounds the fresh messages waiting in memory for a slot of
// their destination.
const maxWaiting = 4096

// take counts an attempt to dests as in progress; give undoes it. Both
// with s.mu held.
func (s *Scheduler) take(dests []string, now time.Time) {
	for _, dst := range dests {
		s.busy[dst]++
		if s.dests[dst] == nil {
			s.dests[dst] = &destState{since: now}
		}
	}
}

func (s *Scheduler) give(dests []string) {
	for _, dst := range dests {
		if s.busy[dst]--; s.busy[dst] <= 0 {
			delete(s.busy, dst)
			delete(s.dests, dst)
		}
	}
}

// startWaiting starts the waiting fresh messages whose destination has a
// free slot, oldest first, within the concurrency; with s.mu held.
func (s *Scheduler) startWaiting(now time.Time) {
	for dst, ls := range s.waiting {
		for len(ls) > 0 && s.busy[dst] < s.opts.PerDestination && len(s.inflight)-s.nWaiting < s.opts.Concurrency {
			l := ls[0]
			ls[0] = leased{}
			ls = ls[1:]
			s.nWaiting--
			dests := []string{dst}
			s.take(dests, now)
			s.workers.Add(1)
			go s.attempt(l.current, dests, &l)
		}
		if len(ls) == 0 {
			delete(s.waiting, dst)
		} else {
			s.waiting[dst] = ls
		}
	}
}

// unwait makes the messages still waiting at shutdown due at once again
// (they were due at their lease's next attempt). The write is not synced:
// losing it only leaves them due at the lease.
func (s *Scheduler) unwait() {
	s.mu.Lock()
	var ls []leased
	for dst, w := range s.waiting {
		ls = append(ls, w...)
		delete(s.waiting, dst)
	}
	for _, l := range ls {
		delete(s.inflight, l.current.ID)
	}
	s.nWaiting = 0
	s.mu.Unlock()
	for _, l := range ls {
		if err := s.q.Postpone(l.current.ID, l.current.NextAttempt, l.next); err != nil && !errors.Is(err, queue.ErrNotFound) {
			s.log.Warn("scheduler: making a waiting message due again at shutdown", "msgID", l.current.ID, "err", err)
		}
	}
}

// attempt makes one delivery attempt of m's pending recipients and records
// the outcome. pre is the lease when it was written with the message's
// intake commit (admitFresh); nil: it is written here first.
func (s *Scheduler) attempt(m queue.Message, dests []string, pre *leased) {
	defer s.workers.Done()
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		now := s.opts.Now()
		s.mu.Lock()
		for _, d := range dests {
			if st := s.dests[d]; st != nil {
				if !st.lastDone.IsZero() {
					dt := now.Sub(st.lastDone)
					if st.interval == 0 {
						st.interval = dt
					} else {
						st.interval = (9*st.interval + dt) / 10
					}
				}
				st.lastDone, st.backoff = now, 0
			}
		}
		s.give(dests)
		s.mu.Unlock()
	}
	defer func() {
		release()
		s.mu.Lock()
		delete(s.inflight, m.ID)
		s.mu.Unlock()
		s.Wake()
	}()

	prev := pre
	if prev == nil {
		l, ok := s.lease(m.ID)
		if !ok {
			return
		}
		prev = &l
	}
	m = prev.current
	var idx []int
	var rcpts []delivery.Recipient
	for i, r := range m.Recipients {
		if r.State == StatePending {
			idx = append(idx, i)
			rcpts = append(rcpts, delivery.Recipient{Address: r.Address, Notify: r.Notify, OriginalRecipient: r.OriginalRecipient})
		}
	}
	var results []delivery.Result
	if len(rcpts) > 0 {
		id := m.ID
		msg := delivery.Message{ID: id, From: m.From, Size: m.Size, EightBit: m.EightBit, SMTPUTF8: m.SMTPUTF8,
			ReceivedAt: m.ReceivedAt, EnvelopeID: m.EnvelopeID, Return: m.Return,
			Open: func() (io.ReadCloser, error) { return s.q.Open(id) }}
		s.m.attempts.Inc()
		results = s.opts.Deliverer.Deliver(s.deliverCtx, msg, rcpts)
	}
	release() // the destinations' connections are free again
	s.Wake()
	s.recordDurably(m.ID, idx, results, prev.next)
}

// leased is a message as its lease was written, and the next attempt it
// had before.
type leased struct {
	current queue.Message
	next    time.Time
}

// setLease sets m's lease and its next attempt as if the attempt will
// fail.
func (s *Scheduler) setLease(policy delivery.RetryPolicy, m *queue.Message, now time.Time) {
	next, giveUp := policy.Next(m.ReceivedAt, now, m.Attempts+1, s.opts.Rand())
	if giveUp || next.IsZero() {
		next = now.Add(policy.Delay(m.Attempts+1, s.opts.Rand()))
	}
	m.NextAttempt, m.LeaseUntil = next, now.Add(leaseFor)
}

// leaseFor is how long an attempt may take before, after a crash, its
// message counts as not in progress any more; it bounds the SMTP
// timeouts of one transaction.
const leaseFor = 30 * time.Minute

// lease writes, before the attempt, its lease and the next attempt as if
// it will fail (mox's queue does the same): a crash mid-attempt then
// neither loses the message nor makes it due at once. The write failing
// (disk full) means no attempt, and none for anybody for a while.
func (s *Scheduler) lease(id string) (leased, bool) {
	l := s.lock(id)
	l.Lock()
	defer l.Unlock()
	m, ok := s.q.Get(id)
	if !ok || m.Held {
		return leased{}, false
	}
	now := s.opts.Now().UTC()
	if m.NextAttempt.After(now) {
		return leased{}, false // rescheduled (admin) since dispatch
	}
	prev := m.NextAttempt
	s.setLease(s.retryPolicy(), &m, now)
	if err := s.q.Update(m); err != nil {
		s.m.stateWriteFailures.WithLabelValues("lease").Inc()
		s.mu.Lock()
		s.writeBackoff = min(max(2*s.writeBackoff, 100*time.Millisecond), 30*time.Second)
		s.writeBlocked = now.Add(s.writeBackoff)
		wait := s.writeBackoff
		s.mu.Unlock()
		s.log.Error("scheduler: cannot write the attempt's lease; not attempting, and pausing attempts", "msgID", id, "err", err, "pause", wait.String())
		return leased{}, false
	}
	s.mu.Lock()
	s.writeBackoff = 0
	s.mu.Unlock()
	return leased{current: m, next: prev}, true
}

// recordDurably writes the attempt's outcome; while that fails the
// message stays parked (in flight, so never due) and the write is retried
// with backoff. The lease already on disk means a crash meanwhile costs at
// most this one delivery again.
func (s *Scheduler) recordDurably(id string, idx []int, results []delivery.Result, prevNext time.Time) {
	wait := 50 * time.Millisecond
	parked := false
	for {
		err := s.record(id, idx, results, prevNext)
		if err == nil {
			if parked {
				s.m.parked.Dec()
				s.log.Info("scheduler: the parked outcome is written", "msgID", id)
			}
			return
		}
		s.m.stateWriteFailures.WithLabelValues("outcome").Inc()
		if !parked {
			parked = true
			s.m.parked.Inc()
		}
		s.log.Error("scheduler: recording the outcome failed; the message is parked until the write succeeds", "msgID", id, "err", err, "retry_in", wait.String())
		select {
		case <-time.After(wait):
		case <-s.stop:
			// Shutting down: one last try, then the lease on disk makes
			// the message due at the lease's next attempt after the
			// restart.
			if err := s.record(id, idx, results, prevNext); err != nil {
				s.log.Error("scheduler: shutting down with an unwritten outcome; the message is retried after the restart at its lease's next attempt", "msgID", id, "err", err)
			}
			s.m.parked.Dec()
			return
		}
		wait = min(2*wait, 30*time.Second)
	}
}
