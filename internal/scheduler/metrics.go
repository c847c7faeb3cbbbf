package scheduler

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/queue"
)

// Metrics are the scheduler's metrics. Per-attempt outcomes, delivery
// latency and TLS usage are the delivery engine's; these are about the
// queue: final outcomes, DSNs, failed state writes, and the queue's shape
// (read from the store's counters and indexes when scraped, never by
// walking the queue).
type Metrics struct {
	finished           *prometheus.CounterVec
	dsnQueued          *prometheus.CounterVec
	dsnDropped         prometheus.Counter
	attempts           prometheus.Counter
	stateWriteFailures *prometheus.CounterVec
	parked             prometheus.Gauge
	busySkips          prometheus.Counter
	freshAdmits        prometheus.Counter
	dispatchSeconds    prometheus.Histogram

	mu sync.Mutex
	s  *Scheduler
}

var (
	depthDesc = prometheus.NewDesc("mailroom_queue_messages",
		"Messages in the queue by state: active (due or being attempted), deferred (waiting for the next attempt), held.",
		[]string{"state"}, nil)
	oldestDesc = prometheus.NewDesc("mailroom_queue_oldest_message_age_seconds",
		"Age of the oldest message in the queue; 0 when empty.", nil, nil)
	quarantinedDesc = prometheus.NewDesc("mailroom_queue_quarantined_messages",
		"Messages set aside because their stored data is unreadable (see docs/queue-recovery.md).", nil, nil)
	corruptDesc = prometheus.NewDesc("mailroom_queue_corruptions_total",
		"Corrupt records and index regions met since the relay started.", nil, nil)
)

// activeCountLimit bounds the due-index entries a scrape reads to count
// active messages; beyond it the gauge reports the limit.
const activeCountLimit = 100000

// NewMetrics registers the scheduler's metrics with reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_queue_recipients_finished_total",
			Help: "Recipients whose delivery is final, by status (delivered, bounced) and reason class (expired, suppressed, unknown_user, deleted, ...).",
		}, []string{"status", "reason"}),
		dsnQueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_dsn_queued_total", Help: "Delivery status notifications queued, by action (failed, delayed).",
		}, []string{"action"}),
		dsnDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_dsn_dropped_total",
			Help: "Recipients of messages from the null sender (such as DSNs) that failed or were delayed: no DSN is ever sent for them.",
		}),
		attempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_queue_attempts_total", Help: "Delivery attempts started (one per message per attempt).",
		}),
		stateWriteFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_queue_state_write_failures_total",
			Help: "Failed writes of delivery state, by write: lease (before an attempt; the attempt is not made) or outcome (after it; the message is parked and the write retried, never made due again).",
		}, []string{"write"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailroom_queue_parked_messages",
			Help: "Messages whose attempt outcome could not be written yet; they are not attempted until it is.",
		}),
		busySkips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_queue_destination_busy_skips_total",
			Help: "Due messages moved ahead because every destination they need was at its connection cap.",
		}),
		freshAdmits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_scheduler_intake_leases_total",
			Help: "Messages leased in their intake commit and handed straight to a worker (no separate lease write).",
		}),
		dispatchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mailroom_scheduler_dispatch_seconds",
			Help:    "Time of one scheduling pass (find due work, start attempts); it does not grow with the queue.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10),
		}),
	}
	m.stateWriteFailures.WithLabelValues("lease")
	m.stateWriteFailures.WithLabelValues("outcome")
	if reg != nil {
		reg.MustRegister(m.finished, m.dsnQueued, m.dsnDropped, m.attempts, m.stateWriteFailures, m.parked,
			m.busySkips, m.freshAdmits, m.dispatchSeconds, m)
	}
	return m
}

func (m *Metrics) observe(s *Scheduler) {
	m.mu.Lock()
	m.s = s
	m.mu.Unlock()
}

// Describe implements prometheus.Collector for the queue gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- depthDesc
	ch <- oldestDesc
	ch <- quarantinedDesc
	ch <- corruptDesc
}

// Collect implements prometheus.Collector for the queue gauges.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	s := m.s
	m.mu.Unlock()
	counts := map[string]float64{StateActive: 0, StateDeferred: 0, StateHeld: 0}
	var oldest, quarantined, corrupt float64
	if s != nil && s.q.Err() == nil {
		now := s.opts.Now()
		total := float64(s.q.Len())
		held := float64(s.q.HeldLen())
		// In-flight messages have their lease's next attempt in the
		// future, so they are not in the due range: add them.
		active := min(float64(s.q.DueCount(now, activeCountLimit)+s.inflightCount()), total-held)
		counts[StateHeld] = held
		counts[StateActive] = active
		counts[StateDeferred] = max(total-held-active, 0)
		if t := s.q.Oldest(); !t.IsZero() {
			oldest = now.Sub(t).Seconds()
		}
		quarantined = float64(s.q.QuarantinedLen())
		corrupt = float64(s.q.Corruptions())
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, n, state)
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest)
	ch <- prometheus.MustNewConstMetric(quarantinedDesc, prometheus.GaugeValue, quarantined)
	ch <- prometheus.MustNewConstMetric(corruptDesc, prometheus.CounterValue, corrupt)
}

// Message states, as shown by the admin interface and the depth gauge.
const (
	StateActive   = "active"
	StateDeferred = "deferred"
	StateHeld     = "held"
)

// messageState is m's state; inflight says the scheduler has it in hand.
// Only a lease on disk makes it active then: once the outcome is written
// (the lease gone) the stored state says what comes next, even in the
// moment before the worker lets go of it.
func messageState(m *queue.Message, inflight bool, now time.Time) string {
	switch {
	case inflight && !m.LeaseUntil.IsZero():
		return StateActive
	case m.Held:
		return StateHeld
	case m.NextAttempt.After(now):
		return StateDeferred
	}
	return StateActive
}
