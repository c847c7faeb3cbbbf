package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"k8s.io/utils/clock"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
)

// Options configure a Dispatcher. Zero values mean the defaults.
type Options struct {
	Queue *queue.Queue
	// Clock drives the retry schedule and the signatures' timestamps;
	// default the real clock.
	Clock clock.WithTicker
	// Resolver resolves webhook hosts; default net.DefaultResolver.
	Resolver *net.Resolver
	// Concurrency bounds POSTs in progress (default 16); PerTarget those
	// to one host:port (default 4).
	Concurrency, PerTarget int
	// Timeout bounds one POST, connection included; default 10s.
	Timeout time.Duration
	// InitialBackoff and MaxBackoff shape the retry schedule: exponential
	// (factor 2) with ±30% jitter; defaults 5s and 30m.
	InitialBackoff, MaxBackoff time.Duration
	// Poll is how often pending events are looked for without a Wake;
	// default 1s.
	Poll       time.Duration
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// hook is one credential's webhook as configured.
type hook struct {
	url   string
	host  string // host:port, the per-target key
	types map[Type]bool
	wh    *standardwebhooks.Webhook
}

// settings are what a configuration says about events.
type settings struct {
	hooks     map[string]*hook // by credential username
	hosts     []string         // the hooks' distinct host:ports
	targets   config.Events
	retention time.Duration
}

// Dispatcher records delivery events and posts them to webhooks.
type Dispatcher struct {
	opts   Options
	q      *queue.Queue
	clk    clock.WithTicker
	log    *slog.Logger
	m      *Metrics
	client *http.Client
	cfg    atomic.Pointer[settings]

	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	started  atomic.Bool
	sends    sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]bool // event ids being posted
	busy     map[string]int  // posts in progress per target
	// finished are the events whose posts ended since the pass last read
	// a page of pending events: forgotten, rescheduled or dropped, so that
	// page's copy of them is stale.
	finished map[string]bool
	pruned   time.Time
	// floor is a time no pending event is due before (while floorSet):
	// the first due time a pass found, lowered by every event stored or
	// rescheduled since. A pass starts reading there, so the keys of the
	// events already posted and deleted ahead of it, which the store
	// would step over one by one until compacted, are not read at all.
	floor    time.Time
	floorSet bool
	// lowest is the earliest due time stored since the last pass began,
	// so that a pass never raises the floor above an event stored while
	// it read.
	lowest time.Time
}

// never stands for "no pending event" as a floor: the latest time the
// store's keys can hold (nanoseconds since 1970 in an int64).
var never = time.Unix(0, math.MaxInt64)

// lower notes an event stored or rescheduled to be due at at.
func (d *Dispatcher) lower(at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.floorSet && at.Before(d.floor) {
		d.floor = at
	}
	if at.Before(d.lowest) {
		d.lowest = at
	}
}

// New returns a dispatcher for the events of cfg; it posts nothing until
// Start.
func New(opts Options, cfg *config.Config) (*Dispatcher, error) {
	if opts.Queue == nil {
		return nil, errors.New("events: Queue is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.PerTarget <= 0 {
		opts.PerTarget = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 5 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Minute
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{opts: opts, q: opts.Queue, clk: opts.Clock, log: opts.Logger,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		inflight: map[string]bool{}, busy: map[string]int{}, finished: map[string]bool{}}
	d.m = newMetrics(opts.Registerer, func() float64 { return float64(d.q.PendingEventCount(1_000_000)) })
	d.client = newClient(opts, d.settings)
	if err := d.Apply(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// Apply takes the webhooks and allowed targets of a (re)loaded
// configuration; events already stored go to their credential's webhook
// as configured when they are posted.
func (d *Dispatcher) Apply(cfg *config.Config) error {
	s := &settings{hooks: map[string]*hook{}, targets: cfg.Events, retention: 24 * time.Hour}
	if r := cfg.Events.Retention; r != nil && r.Duration > 0 {
		s.retention = r.Duration
	}
	for _, cr := range cfg.Credentials {
		w := cr.Webhook
		if w == nil {
			continue
		}
		u, err := url.Parse(w.URL)
		if err != nil || !cfg.Events.AllowsHost(u.Hostname()) {
			return fmt.Errorf("events: credential %s: webhook url is not allowed by events.allowedTargets", cr.Username)
		}
		key, err := config.DecodeWebhookSecret(w.Secret)
		if err != nil {
			return fmt.Errorf("events: credential %s: webhook secret: %w", cr.Username, err)
		}
		wh, _ := standardwebhooks.NewWebhookRaw(key)
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		h := &hook{url: w.URL, host: net.JoinHostPort(u.Hostname(), port), wh: wh}
		if len(w.Types) > 0 {
			h.types = map[Type]bool{}
			for _, t := range w.Types {
				h.types[Type(t)] = true
			}
		}
		s.hooks[cr.Username] = h
		if !slices.Contains(s.hosts, h.host) {
			s.hosts = append(s.hosts, h.host)
		}
	}
	d.cfg.Store(s)
	return nil
}

func (d *Dispatcher) settings() *settings { return d.cfg.Load() }

// wants returns the webhook e goes to, or nil.
func (s *settings) wants(e *Event) *hook {
	h := s.hooks[e.Credential]
	if h == nil || h.types != nil && !h.types[e.Type] {
		return nil
	}
	return h
}

// stored is the value of a pending event: the exact body to post (so a
// resend is byte for byte the same) and the attempts made.
type stored struct {
	Event    json.RawMessage `json:"event"`
	Attempts int             `json:"attempts,omitempty"`
}

// Records returns what to write, in the batch of the change that caused
// them, for evs: each is kept in the event log, and stored for its
// webhook when its credential has one that wants its type.
func (d *Dispatcher) Records(evs []Event) []queue.Record {
	s := d.settings()
	var out []queue.Record
	for i := range evs {
		e := &evs[i]
		body, err := json.Marshal(e)
		if err != nil {
			continue // plain strings and maps: cannot fail
		}
		out = append(out, queue.EventLogRecord(e.Timestamp, e.ID, body))
		if s.wants(e) != nil {
			v, _ := json.Marshal(stored{Event: body})
			out = append(out, queue.PendingEventRecord(e.Timestamp, e.ID, v))
		}
	}
	return out
}

// Recorded counts evs once the batch carrying their records committed,
// and wakes the dispatcher.
//
// Only events stored for a webhook lower the floor and wake it: without
// webhooks, a pass per queued message cost a twentieth of intake. (A
// reload between Records and Recorded can make this miss a wake; the
// event is then posted after the next poll.)
func (d *Dispatcher) Recorded(evs []Event) {
	s := d.settings()
	pending := false
	for i := range evs {
		d.m.events.WithLabelValues(evs[i].Credential, string(evs[i].Type)).Inc()
		if s.wants(&evs[i]) == nil {
			continue
		}
		// After the commit, so that a pass which read before it cannot
		// leave the floor above the event (lowering before would not do).
		d.lower(evs[i].Timestamp)
		pending = true
	}
	if pending {
		d.Wake()
	}
}

// Queued is the intake's hook (relay.Options.OnQueued): the records of a
// queued event per recipient of m, written in the batch that commits m
// (m.ID must be the writer's id), and the call that counts them once that
// batch is durable (a refused commit queued nothing).
func (d *Dispatcher) Queued(m *queue.Message) ([]queue.Record, func()) {
	at := m.ReceivedAt
	if at.IsZero() {
		at = d.clk.Now()
	}
	evs := make([]Event, len(m.Recipients))
	for i, r := range m.Recipients {
		evs[i] = ForMessage(Queued, m, at)
		evs[i].Recipient = r.Address
	}
	return d.Records(evs), func() { d.Recorded(evs) }
}

// Wake makes the dispatcher look for pending events now.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Start begins posting.
func (d *Dispatcher) Start() {
	d.started.Store(true)
	go d.loop()
}

// Stop stops starting posts and waits for those in progress (each ends
// within Timeout). What is not posted stays stored for the next start.
func (d *Dispatcher) Stop() {
	d.stopOnce.Do(func() { close(d.stop) })
	if d.started.Load() {
		<-d.done
	}
	d.sends.Wait()
}

func (d *Dispatcher) loop() {
	defer close(d.done)
	for {
		next := d.pass()
		wait := d.opts.Poll
		if !next.IsZero() {
			wait = min(max(next.Sub(d.clk.Now()), 0), d.opts.Poll)
		}
		t := d.clk.NewTimer(wait)
		select {
		case <-d.stop:
			t.Stop()
			return
		case <-d.wake:
		case <-t.C():
		}
		t.Stop()
	}
}

// pass starts a POST for each due event, within the concurrency caps, and
// returns when the next one falls due (zero: unknown).
func (d *Dispatcher) pass() time.Time {
	now := d.clk.Now()
	s := d.settings()
	d.prune(now, s.retention)
	d.mu.Lock()
	var cursor queue.PendingEvent
	if d.floorSet {
		cursor.At = d.floor
	}
	d.lowest = never
	d.mu.Unlock()
	first := true
	// A page holds what can start now and what is in progress, little
	// more: each finishing post starts a pass.
	page := 2*d.opts.Concurrency + 16
	for {
		d.mu.Lock()
		free := d.opts.Concurrency - len(d.inflight)
		clear(d.finished)
		d.mu.Unlock()
		if free <= 0 || d.saturated(s) {
			return time.Time{} // a finishing post wakes the loop
		}
		due, next, err := d.q.DueEvents(now, cursor, page)
		if err != nil {
			if !errors.Is(err, queue.ErrClosed) {
				d.log.Error("events: reading pending events", "err", err)
			}
			return now.Add(time.Second)
		}
		if first {
			first = false
			d.raiseFloor(due, next)
		}
		for _, pe := range due {
			cursor = pe
			d.mu.Lock()
			skip := d.inflight[pe.ID] || d.finished[pe.ID]
			d.mu.Unlock()
			if skip {
				continue
			}
			if d.saturated(s) {
				return time.Time{} // a finishing post wakes the loop
			}
			var st stored
			var e Event
			if json.Unmarshal(pe.Value, &st) != nil || json.Unmarshal(st.Event, &e) != nil {
				d.drop(pe, "", "the stored event does not decode")
				continue
			}
			h := s.wants(&e)
			switch {
			case h == nil:
				d.drop(pe, e.Credential, "the credential no longer has a webhook for this type")
				continue
			case now.After(e.Timestamp.Add(s.retention)):
				d.expire(pe, &e, st, s.retention)
				continue
			}
			d.mu.Lock()
			if d.busy[h.host] >= d.opts.PerTarget || len(d.inflight) >= d.opts.Concurrency {
				d.mu.Unlock()
				continue // a finishing post wakes the loop
			}
			d.inflight[pe.ID] = true
			d.busy[h.host]++
			d.mu.Unlock()
			d.sends.Add(1)
			go d.send(pe, st, &e, h, s.retention)
		}
		if len(due) < page {
			return next
		}
	}
}

// raiseFloor sets the floor from a pass's first page (read from the old
// floor): its first event's due time, or the next due time when nothing
// is due yet, or never when nothing is pending; but never above an event
// stored since the pass began.
func (d *Dispatcher) raiseFloor(due []queue.PendingEvent, next time.Time) {
	f := never
	switch {
	case len(due) > 0:
		f = due[0].At
	case !next.IsZero():
		f = next
	}
	d.mu.Lock()
	d.floor, d.floorSet = minTime(f, d.lowest), true
	d.mu.Unlock()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// saturated reports whether every webhook target has PerTarget posts in
// progress: then no pending event can start (and reading on would decode
// the whole backlog for nothing) until a post finishes and wakes the
// loop.
func (d *Dispatcher) saturated(s *settings) bool {
	if len(s.hosts) == 0 {
		return false // what is pending is to be dropped
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, host := range s.hosts {
		if d.busy[host] < d.opts.PerTarget {
			return false
		}
	}
	return true
}

// expire drops an event its webhook did not accept within the retention.
func (d *Dispatcher) expire(pe queue.PendingEvent, e *Event, st stored, retention time.Duration) {
	d.drop(pe, e.Credential, fmt.Sprintf("not accepted within events.retention (%s, %d attempts)", retention, st.Attempts))
}

// prune forgets listed events older than the retention, once a minute.
func (d *Dispatcher) prune(now time.Time, retention time.Duration) {
	if now.Sub(d.pruned) < time.Minute {
		return
	}
	d.pruned = now
	if err := d.q.PruneEventLog(now.Add(-retention)); err != nil && !errors.Is(err, queue.ErrClosed) {
		d.log.Warn("events: pruning the event log", "err", err)
	}
}

func (d *Dispatcher) drop(pe queue.PendingEvent, credential, why string) {
	if err := d.q.DeleteEvents(pe); err != nil {
		d.log.Error("events: dropping an event", "eventID", pe.ID, "err", err)
		return
	}
	d.m.dropped.Inc()
	d.log.Warn("events: event dropped", "eventID", pe.ID, "credential", credential, "reason", why)
}

// send posts one event and records the outcome: deleted on 2xx,
// rescheduled with backoff otherwise.
func (d *Dispatcher) send(pe queue.PendingEvent, st stored, e *Event, h *hook, retention time.Duration) {
	defer d.sends.Done()
	defer func() {
		d.mu.Lock()
		delete(d.inflight, pe.ID)
		d.finished[pe.ID] = true
		if d.busy[h.host]--; d.busy[h.host] <= 0 {
			delete(d.busy, h.host)
		}
		d.mu.Unlock()
		d.Wake()
	}()
	result, err := d.post(h, e.ID, st.Event)
	d.m.deliveries.WithLabelValues(e.Credential, result).Inc()
	if err == nil {
		if err := d.q.DeleteEvents(pe); err != nil && !errors.Is(err, queue.ErrClosed) {
			d.log.Warn("events: forgetting a posted event (it will be posted again)", "eventID", e.ID, "err", err)
		}
		return
	}
	st.Attempts++
	now := d.clk.Now()
	at := now.Add(Backoff(d.opts.InitialBackoff, d.opts.MaxBackoff, st.Attempts))
	// The last chance is at the end of the retention; then it is dropped.
	end := e.Timestamp.Add(retention)
	if !now.Before(end) {
		d.expire(pe, e, st, retention)
		return
	}
	if at.After(end) {
		at = end
	}
	v, _ := json.Marshal(st)
	d.log.Info("events: webhook post failed; retrying", "eventID", e.ID, "credential", e.Credential,
		"attempts", st.Attempts, "next", at.Format(time.RFC3339), "err", err)
	if err := d.q.RescheduleEvent(pe, at, v); err != nil && !errors.Is(err, queue.ErrClosed) {
		d.log.Warn("events: rescheduling an event", "eventID", e.ID, "err", err)
	}
	d.lower(at)
}

// maxResponse bounds what is read of a receiver's response.
const maxResponse = 64 << 10

// post signs and POSTs body; result is the metric label.
func (d *Dispatcher) post(h *hook, id string, body []byte) (result string, err error) {
	ts := d.clk.Now()
	sig, err := h.wh.Sign(id, ts, body)
	if err != nil {
		return "error", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytesReader(body))
	if err != nil {
		return "error", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mailroom-relay")
	req.Header.Set(standardwebhooks.HeaderWebhookID, id)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, sig)
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenAddress) {
			return "refused", err
		}
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return "timeout", err
		}
		return "error", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode/100 != 2 {
		return "http_" + strconv.Itoa(resp.StatusCode/100) + "xx", fmt.Errorf("webhook answered %s", resp.Status)
	}
	return "delivered", nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Backoff is the wait before retry n (1-based): InitialBackoff doubling
// per retry up to MaxBackoff, each ±30% (cenkalti/backoff's exponential
// schedule).
func Backoff(initial, maxWait time.Duration, n int) time.Duration {
	b := &backoff.ExponentialBackOff{InitialInterval: initial, RandomizationFactor: 0.3, Multiplier: 2, MaxInterval: maxWait}
	b.Reset()
	var wait time.Duration
	for range min(max(n, 1), 64) {
		wait = b.NextBackOff()
	}
	return wait
}

// Filter selects listed events.
type Filter struct {
	Credential string
	Type       Type
	// Limit bounds the result; default 100.
	Limit int
}

// List returns the recent events matching f, newest first.
func (d *Dispatcher) List(f Filter) ([]Event, error) {
	return List(d.q, f)
}

// List reads the event log of q.
func List(q *queue.Queue, f Filter) ([]Event, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	out := []Event{}
	err := q.EventLog(func(_ time.Time, _ string, v []byte) bool {
		var e Event
		if json.Unmarshal(v, &e) != nil {
			return true
		}
		if (f.Credential == "" || e.Credential == f.Credential) && (f.Type == "" || e.Type == f.Type) {
			out = append(out, e)
		}
		return len(out) < f.Limit
	})
	return out, err
}

// ValidType reports whether t names an event type.
func ValidType(t string) bool { return slices.Contains(Types, Type(t)) }
