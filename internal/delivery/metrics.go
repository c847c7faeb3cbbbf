package delivery

import "github.com/prometheus/client_golang/prometheus"

// metrics are the delivery metrics. Queue depth and the oldest message's
// age belong to the scheduler, which owns the queue.
type metrics struct {
	recipients    *prometheus.CounterVec
	latency       prometheus.Histogram
	connections   *prometheus.CounterVec
	transactions  *prometheus.CounterVec
	open          prometheus.Gauge
	hostDownSkips prometheus.Counter
	suppressed    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		recipients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_delivery_recipients_total",
			Help: "Recipient delivery attempts by outcome (delivered, deferred, bounced) and reason class.",
		}, []string{"status", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailroom_delivery_latency_seconds",
			Help: "Time from the relay accepting a message to the remote server's 250 after DATA.",
			// 100ms to about 6 days: first-attempt deliveries and retried ones.
			Buckets: prometheus.ExponentialBuckets(0.1, 4, 12),
		}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_delivery_connections_total",
			Help: "Outbound SMTP sessions set up, by TLS version (none for cleartext) and whether the certificate was valid for the host.",
		}, []string{"tls", "verified"}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailroom_delivery_transactions_total",
			Help: "Messages handed over to a remote server (250 after DATA), by TLS version of the session.",
		}, []string{"tls"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailroom_delivery_open_connections",
			Help: "Outbound SMTP sessions open now, busy or idle.",
		}),
		hostDownSkips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_delivery_host_down_skips_total",
			Help: "Connection attempts not made because the server failed recently.",
		}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailroom_delivery_suppressed_total",
			Help: "Recipients bounced at once because they are on the suppression list.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.recipients, m.latency, m.connections, m.transactions, m.open, m.hostDownSkips, m.suppressed} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
