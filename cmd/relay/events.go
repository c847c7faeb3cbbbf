package main

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/admin"
	"mailroom.io/mailroom/internal/events"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
)

// eventSide is the relay's delivery events: the scheduler records them
// with each outcome, the intake with each queued message (OnQueued), the
// dispatcher posts them to the credentials' webhooks, and the admin API
// lists them.
type eventSide struct {
	d   *events.Dispatcher
	log *slog.Logger
}

// startEvents starts the dispatcher over q and makes dl's scheduler
// record events (before the scheduler starts).
func startEvents(cfg *config.Config, q *queue.Queue, dl *deliverySide, reg prometheus.Registerer, log *slog.Logger) (*eventSide, error) {
	d, err := events.New(events.Options{Queue: q, Registerer: reg, Logger: log.With("component", "events")}, cfg)
	if err != nil {
		return nil, err
	}
	dl.sched.SetEvents(d)
	d.Start()
	return &eventSide{d: d, log: log}, nil
}

// queued is relay.Options.OnQueued.
func (es *eventSide) queued(m *queue.Message) ([]queue.Record, func()) { return es.d.Queued(m) }

// follow wraps an OnApply: webhooks and allowed targets follow reloads.
func (es *eventSide) follow(next func(*config.Config)) func(*config.Config) {
	return func(cfg *config.Config) {
		if err := es.d.Apply(cfg); err != nil {
			es.log.Error("relay: event webhooks not applied; keeping the previous ones", "err", err)
		}
		next(cfg)
	}
}

// admin serves GET /v1/events beside the rest of the admin API.
func (es *eventSide) admin(next http.Handler) http.Handler { return admin.Events(next, es.d) }

// stop waits for posts in progress; what is unposted stays stored.
func (es *eventSide) stop() { es.d.Stop() }
