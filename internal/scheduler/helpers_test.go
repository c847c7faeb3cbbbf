package scheduler_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/scheduler"
	"mailroom.io/mailroom/internal/testutil/promtest"
)

// clock is the scheduler's time, moved only by the test
// (k8s.io/utils/clock/testing); Advance is its Step.
type clock struct{ *clocktesting.FakeClock }

func (c clock) Advance(d time.Duration) { c.Step(d) }

// outcome is what the fake delivery engine answers for one recipient.
type outcome struct {
	status delivery.Status
	code   int
	text   string
}

var (
	ok       = outcome{delivery.Delivered, 250, "2.0.0 OK"}
	tempFail = outcome{delivery.Deferred, 451, "4.3.0 try again later"}
	permFail = outcome{delivery.Failed, 550, "5.1.1 no such user"}
)

// call is one Deliver call the fake saw, with the message bytes it read.
type call struct {
	id, from string
	rcpts    []string
	data     string
}

// fakeDeliverer answers from a per-address script (default: delivered)
// and records every call. While gate is set, Deliver signals started and
// waits for the gate (or for its context, as the real engine does).
type fakeDeliverer struct {
	mu      sync.Mutex
	script  map[string][]outcome // consumed front first; the last one repeats
	calls   []call
	gate    chan struct{}
	started chan string
	// down: addresses whose servers are all remembered as down until
	// the time given (a ReasonHostDown result, nothing tried).
	down map[string]time.Time
}

func newFake() *fakeDeliverer {
	return &fakeDeliverer{script: map[string][]outcome{}, started: make(chan string, 100), down: map[string]time.Time{}}
}

func (f *fakeDeliverer) answer(addr string, outs ...outcome) {
	f.mu.Lock()
	f.script[addr] = outs
	f.mu.Unlock()
}

// hold makes the following Deliver calls wait until the returned function
// is called.
func (f *fakeDeliverer) hold() (release func()) {
	g := make(chan struct{})
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.gate = nil
			f.mu.Unlock()
			close(g)
		})
	}
}

func (f *fakeDeliverer) Deliver(ctx context.Context, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	rc, err := msg.Open()
	if err != nil {
		panic(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	f.mu.Lock()
	c := call{id: msg.ID, from: msg.From, data: string(data)}
	for _, r := range rcpts {
		c.rcpts = append(c.rcpts, r.Address)
	}
	f.calls = append(f.calls, c)
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		f.started <- msg.ID
		select {
		case <-gate:
		case <-ctx.Done():
			out := make([]delivery.Result, len(rcpts))
			for i, r := range rcpts {
				// As the real engine reports a transaction interrupted
				// by cancellation.
				out[i] = delivery.Result{Recipient: r.Address, Status: delivery.Deferred, Reason: delivery.ReasonConnection,
					Code: "4.4.2", Detail: "mx.example.net [192.0.2.25]: end of data interrupted: " + ctx.Err().Error()}
			}
			return out
		}
	}
	out := make([]delivery.Result, len(rcpts))
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range rcpts {
		if until, isDown := f.down[r.Address]; isDown {
			out[i] = delivery.Result{Recipient: r.Address, Status: delivery.Deferred, Reason: delivery.ReasonHostDown, Code: "4.4.1",
				Detail: "not attempted: every server failed recently", NotBefore: until}
			continue
		}
		o := ok
		if s := f.script[r.Address]; len(s) > 0 {
			o = s[0]
			if len(s) > 1 {
				f.script[r.Address] = s[1:]
			}
		}
		enh, text, _ := strings.Cut(o.text, " ")
		res := delivery.Result{Recipient: r.Address, Status: o.status, Reply: delivery.Reply{Code: o.code, Enhanced: enh, Text: text},
			Code: enh, RemoteHost: "mx.example.net", RemoteIP: "192.0.2.25"}
		if o.status == delivery.Deferred {
			res.Reason = delivery.ReasonRecipient
		} else if o.status == delivery.Failed {
			res.Reason = delivery.ReasonUnknownUser
		}
		res.Class = delivery.ClassOf(res) // as the real engine classifies
		out[i] = res
	}
	return out
}

// callsFor returns the calls for message id.
func (f *fakeDeliverer) callsFor(id string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.id == id {
			out = append(out, c)
		}
	}
	return out
}

// dsnsTo returns the DSNs (calls from the null sender) delivered to addr.
func (f *fakeDeliverer) dsnsTo(addr string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.from == "" && slices.Contains(c.rcpts, addr) {
			out = append(out, c)
		}
	}
	return out
}

// env is a scheduler over a real queue in a temp dir with a fake engine
// and a test clock. The scheduler starts paused so a test can lay out the
// queue first; run unpauses it.
type env struct {
	t     *testing.T
	dir   string
	q     *queue.Queue
	fake  *fakeDeliverer
	clock clock
	reg   *prometheus.Registry
	s     *scheduler.Scheduler
	retry delivery.RetryPolicy
	free  atomic.Uint64 // what the queue's reserve checks see as free space
	sign  func([]byte) (string, error)
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func defaultRetry() delivery.RetryPolicy {
	// No jitter: the tests know each next attempt time exactly.
	return delivery.RetryPolicy{Schedule: []time.Duration{10 * time.Minute, time.Hour}, MaxAge: 24 * time.Hour,
		DelayWarningAfter: 4 * time.Hour}
}

func newEnv(t *testing.T, retry delivery.RetryPolicy) *env {
	t.Helper()
	return newEnvWith(t, retry, nil)
}

// newEnvWith is newEnv with a DSN signer.
func newEnvWith(t *testing.T, retry delivery.RetryPolicy, sign func([]byte) (string, error)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), fake: newFake(), clock: clock{clocktesting.NewFakeClock(t0)}, retry: retry, sign: sign}
	e.free.Store(1 << 40)
	e.open()
	return e
}

// open opens the queue and a new (paused, started) scheduler over it.
func (e *env) open() {
	e.t.Helper()
	q, err := queue.Open(filepath.Join(e.dir, "queue"), queue.Options{Reserve: 1 << 20, Now: e.clock.Now,
		Statfs: func() (uint64, error) { return e.free.Load(), nil }})
	if err != nil {
		e.t.Fatal(err)
	}
	e.q = q
	e.reg = prometheus.NewRegistry()
	s, err := scheduler.New(scheduler.Options{Queue: q, Deliverer: e.fake, Retry: e.retry, Hostname: "relay.test", Sign: e.sign,
		Paused: true, Metrics: scheduler.NewMetrics(e.reg), Now: e.clock.Now, Rand: func() float64 { return 0.5 }})
	if err != nil {
		e.t.Fatal(err)
	}
	e.s = s
	s.Start()
	e.t.Cleanup(e.close)
}

// close shuts the scheduler down and closes the queue (once).
func (e *env) close() {
	if e.s == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // whatever is still in progress is cut off at once
	e.s.Shutdown(ctx)
	e.q.Close()
	e.s = nil
}

// restart is a clean relay restart: same directory, new queue and
// scheduler instances.
func (e *env) restart() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) run() { e.s.SetPaused(false) }

// enqueue commits a message from from to rcpts, received now.
func (e *env) enqueue(from string, rcpts ...string) string {
	e.t.Helper()
	w, err := e.q.NewWriter()
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: test %s\r\nMessage-ID: <%s@test>\r\n\r\nHello.\r\n", from, rcpts[0], w.ID(), w.ID())
	m := queue.Message{From: from, ReceivedAt: e.clock.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, queue.Recipient{Address: r})
	}
	if err := w.Commit(m); err != nil {
		e.t.Fatal(err)
	}
	return w.ID()
}

// edit changes a queued message directly (test setup, scheduler paused).
func (e *env) edit(id string, fn func(m *queue.Message)) {
	e.t.Helper()
	m, ok := e.q.Get(id)
	if !ok {
		e.t.Fatalf("message %s not queued", id)
	}
	fn(&m)
	if err := e.q.Update(m); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(id string) queue.Message {
	e.t.Helper()
	m, ok := e.q.Get(id)
	if !ok {
		e.t.Fatalf("message %s is no longer queued", id)
	}
	return m
}

func (e *env) gone(id string) bool {
	_, ok := e.q.Get(id)
	return !ok
}

// eventually polls cond until it holds; the generous limit is only for a
// wedged test on a loaded machine, never a measure of speed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// settle waits until the scheduler has dispatched everything due at the
// current test time and recorded the outcomes: nothing is due any more
// (an attempt's lease moves its message out of the due range), no attempt
// is in progress, and a marker message enqueued now is delivered.
func (e *env) settle() {
	e.t.Helper()
	marker := e.enqueue("marker@example.com", "marker@example.org")
	e.s.Wake()
	eventually(e.t, "the marker message is delivered", func() bool { return e.gone(marker) })
	eventually(e.t, "nothing due and no attempt in progress", func() bool {
		e.s.Wake()
		return e.q.DueCount(e.clock.Now(), 1) == 0 && len(e.s.List(scheduler.Filter{State: scheduler.StateActive})) == 0
	})
}

// metric returns the value of the sample of name with the given labels.
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	var pairs []string
	for k, v := range labels {
		pairs = append(pairs, k, v)
	}
	return promtest.Value(e.t, e.reg, name, pairs...)
}
