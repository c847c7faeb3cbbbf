package events

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the events' Prometheus series.
type Metrics struct {
	events     *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	pending    prometheus.GaugeFunc
	dropped    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, pending func() float64) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailroom_events_total",
			Help: "Delivery events recorded, by credential (empty: not credential mail) and type."}, []string{"credential", "type"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailroom_webhook_deliveries_total",
			Help: "Webhook POSTs by credential and result (delivered, http_4xx, http_5xx, timeout, refused, error)."}, []string{"credential", "result"}),
		pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailroom_webhook_pending",
			Help: "Events stored and waiting for their webhook."}, pending),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "mailroom_webhook_dropped_total",
			Help: "Events given up: not accepted within events.retention, or their webhook was removed."}),
	}
	if reg != nil {
		reg.MustRegister(m.events, m.deliveries, m.pending, m.dropped)
	}
	return m
}
