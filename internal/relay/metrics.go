package relay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the relay's Prometheus metrics. The queue reports into them
// through ObserveCommit.
type Metrics struct {
	Registry *prometheus.Registry

	sessions       *prometheus.CounterVec
	activeSessions prometheus.Gauge
	accepted       prometheus.Counter
	acceptedBytes  prometheus.Counter
	rejected       *prometheus.CounterVec
	authFailures   *prometheus.CounterVec
	acceptLatency  prometheus.Histogram
	commitLatency  prometheus.Histogram
	commitBatch    prometheus.Histogram
	reloads        *prometheus.CounterVec
	lastReload     prometheus.Gauge
	configRevision prometheus.Gauge
}

// NewMetrics registers the relay's metrics in a new registry, next to the
// Go runtime and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) prometheus.Collector { reg.MustRegister(c); return c }
	latencyBuckets := []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5}
	return &Metrics{
		Registry: reg,
		sessions: f(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_relay_sessions_total", Help: "SMTP connections accepted, by listener.",
		}, []string{"listener"})).(*prometheus.CounterVec),
		activeSessions: f(prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailroom_relay_sessions_active", Help: "SMTP connections open now.",
		})).(prometheus.Gauge),
		accepted: f(prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_relay_messages_accepted_total", Help: "Messages acknowledged with 250 after being queued durably.",
		})).(prometheus.Counter),
		acceptedBytes: f(prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_relay_accepted_bytes_total", Help: "Bytes of accepted messages as queued.",
		})).(prometheus.Counter),
		rejected: f(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_relay_rejected_total", Help: "Commands or messages refused, by reason.",
		}, []string{"reason"})).(*prometheus.CounterVec),
		authFailures: f(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_relay_auth_failures_total", Help: "Failed or refused AUTH attempts, by reason.",
		}, []string{"reason"})).(*prometheus.CounterVec),
		acceptLatency: f(prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailroom_relay_accept_duration_seconds", Help: "Time from the end of DATA to the 250 reply (signing and durable queueing).",
			Buckets: latencyBuckets,
		})).(prometheus.Histogram),
		commitLatency: f(prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailroom_queue_fsync_duration_seconds", Help: "Time one group commit took to write and fsync.",
			Buckets: latencyBuckets,
		})).(prometheus.Histogram),
		commitBatch: f(prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailroom_queue_commit_batch_records", Help: "Records made durable by one fsync.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		})).(prometheus.Histogram),
		reloads: f(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_relay_config_reloads_total", Help: "Configuration reloads, by result (success or failure).",
		}, []string{"result"})).(*prometheus.CounterVec),
		lastReload: f(prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailroom_relay_config_last_reload_success_timestamp_seconds", Help: "When a configuration was last applied.",
		})).(prometheus.Gauge),
		configRevision: f(prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailroom_relay_config_revision", Help: "Revision of the configuration applied in full (all shards consistent).",
		})).(prometheus.Gauge),
	}
}

// ObserveCommit is the queue's OnCommit hook.
func (m *Metrics) ObserveCommit(d time.Duration, records int) {
	m.commitLatency.Observe(d.Seconds())
	m.commitBatch.Observe(float64(records))
}

// registerQueueDepth exposes the queue length; called once the queue exists.
func (m *Metrics) registerQueueDepth(depth func() int) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mailroom_queue_depth", Help: "Messages in the queue.",
	}, func() float64 { return float64(depth()) }))
}
