package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/admin"
	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/scheduler"
)

// deliverySide is the relay's outbound half: delivery engine, suppression
// list and scheduler over the queue.
type deliverySide struct {
	log   *slog.Logger
	d     *delivery.Deliverer
	sup   *delivery.Suppressions
	sched *scheduler.Scheduler
	cfg   delivery.Config
}

func startDelivery(cfg *config.Config, q *queue.Queue, reg prometheus.Registerer, log *slog.Logger) (*deliverySide, error) {
	dc := delivery.FromConfig(cfg)
	// The suppression list is per pod, like the queue, and lives beside it
	// on the same volume.
	sup, err := delivery.OpenSuppressions(filepath.Join(cfg.Queue.Directory, "suppressions"), cfg.Delivery.SuppressionTTL.Duration, nil)
	if err != nil {
		return nil, fmt.Errorf("suppression list: %w", err)
	}
	res, err := delivery.NewResolver(dc.Resolver)
	if err != nil {
		return nil, fmt.Errorf("delivery.resolvers: %w", err)
	}
	opts := dc.Options
	opts.Resolver = res
	opts.Suppressions = sup
	opts.Registerer = reg
	opts.Logger = log.With("component", "delivery")
	d, err := delivery.New(opts)
	if err != nil {
		return nil, err
	}
	sched, err := scheduler.New(scheduler.Options{Queue: q, Deliverer: d, Retry: dc.Retry, Hostname: cfg.Hostname,
		Concurrency: cfg.Delivery.Concurrency, Paused: dc.Paused, Metrics: scheduler.NewMetrics(reg),
		Logger: log.With("component", "scheduler")})
	if err != nil {
		d.Close()
		return nil, err
	}
	return &deliverySide{log: log, d: d, sup: sup, sched: sched, cfg: dc}, nil
}

// apply follows a reloaded configuration: pause and the retry policy take
// effect at once; routing settings need a restart.
func (ds *deliverySide) apply(cfg *config.Config) {
	dc := delivery.FromConfig(cfg)
	ds.sched.SetPaused(dc.Paused)
	if err := ds.sched.SetRetry(dc.Retry); err != nil {
		ds.log.Error("relay: delivery.retry not applied", "err", err)
	}
	if !reflect.DeepEqual(dc.Options, ds.cfg.Options) || !reflect.DeepEqual(dc.Resolver, ds.cfg.Resolver) {
		ds.log.Warn("relay: delivery routing settings changed; they apply after a restart")
	}
}

func (ds *deliverySide) adminHandler() http.Handler { return admin.Handler(ds.sched, ds.sup) }

// stop ends deliveries (see scheduler.Shutdown) and closes connections.
func (ds *deliverySide) stop(ctx context.Context) error {
	err := ds.sched.Shutdown(ctx)
	ds.d.Close()
	if ferr := ds.sup.Flush(); ferr != nil {
		ds.log.Error("relay: saving the suppression list", "err", ferr)
	}
	return err
}
