package scheduler

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/queue"
)

// Metrics are the scheduler's metrics. Per-attempt outcomes, delivery
// latency and TLS usage are the delivery engine's; these are about the
// queue: final outcomes, DSNs, and the queue's shape (computed when
// scraped).
type Metrics struct {
	finished   *prometheus.CounterVec
	dsnQueued  *prometheus.CounterVec
	dsnDropped prometheus.Counter
	attempts   prometheus.Counter

	mu sync.Mutex
	s  *Scheduler
}

var (
	depthDesc = prometheus.NewDesc("mailroom_queue_messages",
		"Messages in the queue by state: active (due or being attempted), deferred (waiting for the next attempt), held.",
		[]string{"state"}, nil)
	oldestDesc = prometheus.NewDesc("mailroom_queue_oldest_message_age_seconds",
		"Age of the oldest message in the queue; 0 when empty.", nil, nil)
)

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
	}
	if reg != nil {
		reg.MustRegister(m.finished, m.dsnQueued, m.dsnDropped, m.attempts, m)
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
}

// Collect implements prometheus.Collector for the queue gauges.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	s := m.s
	m.mu.Unlock()
	counts := map[string]float64{StateActive: 0, StateDeferred: 0, StateHeld: 0}
	var oldest float64
	if s != nil {
		now := s.opts.Now()
		s.mu.Lock()
		inflight := s.inflight
		s.q.Select(func(qm *queue.Message) bool {
			counts[messageState(qm, inflight[qm.ID], now)]++
			if age := now.Sub(qm.ReceivedAt).Seconds(); age > oldest {
				oldest = age
			}
			return false
		})
		s.mu.Unlock()
	}
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, n, state)
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest)
}

// Message states, as shown by the admin interface and the depth gauge.
const (
	StateActive   = "active"
	StateDeferred = "deferred"
	StateHeld     = "held"
)

func messageState(m *queue.Message, inflight bool, now time.Time) string {
	switch {
	case inflight:
		return StateActive
	case m.Held:
		return StateHeld
	case m.NextAttempt.After(now):
		return StateDeferred
	}
	return StateActive
}
