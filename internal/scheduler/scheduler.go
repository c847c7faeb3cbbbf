package scheduler

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
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
	// Paused: deliver nothing until SetPaused(false).
	Paused bool
	// HistoryLimit bounds the attempts kept per message; default 50.
	HistoryLimit int
	Metrics      *Metrics
	Logger       *slog.Logger
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

	mu       sync.Mutex
	inflight map[string]bool
	paused   bool
	retry    delivery.RetryPolicy

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
		inflight: map[string]bool{}, paused: opts.Paused, retry: opts.Retry,
	}
	s.m.observe(s)
	return s, nil
}

// Start begins delivering.
func (s *Scheduler) Start() { go s.loop() }

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
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.loopDone
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
		next := s.dispatch()
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

// dispatch starts attempts for due messages, as many as the concurrency
// allows, and returns when the next message falls due (zero: unknown).
func (s *Scheduler) dispatch() time.Time {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		return time.Time{}
	}
	free := s.opts.Concurrency - len(s.inflight)
	if free <= 0 {
		return time.Time{} // a finishing worker wakes the loop
	}
	var next time.Time
	due := s.q.Select(func(m *queue.Message) bool {
		if s.inflight[m.ID] || m.Held {
			return false
		}
		if m.NextAttempt.After(now) {
			if next.IsZero() || m.NextAttempt.Before(next) {
				next = m.NextAttempt
			}
			return false
		}
		return true
	})
	slices.SortFunc(due, func(a, b queue.Message) int {
		if c := a.NextAttempt.Compare(b.NextAttempt); c != 0 {
			return c
		}
		return a.ReceivedAt.Compare(b.ReceivedAt)
	})
	if len(due) > free {
		due = due[:free]
		next = now // more are due right now
	}
	for _, m := range due {
		s.inflight[m.ID] = true
		s.workers.Add(1)
		go s.attempt(m)
	}
	return next
}

func (s *Scheduler) lock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

// attempt makes one delivery attempt of m's pending recipients and records
// the outcome.
func (s *Scheduler) attempt(m queue.Message) {
	defer s.workers.Done()
	defer func() {
		s.mu.Lock()
		delete(s.inflight, m.ID)
		s.mu.Unlock()
		s.Wake()
	}()
	var idx []int
	var rcpts []delivery.Recipient
	for i, r := range m.Recipients {
		if r.State == "" {
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
	if err := s.record(m.ID, idx, results); err != nil {
		s.log.Error("scheduler: recording the outcome failed; the attempt will be repeated", "msgID", m.ID, "err", err)
	}
}
