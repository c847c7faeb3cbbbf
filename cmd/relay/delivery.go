package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"sync/atomic"

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
	q     *queue.Queue
	d     *delivery.Deliverer
	sup   *delivery.Suppressions
	sched *scheduler.Scheduler
	cfg   delivery.Config
	sign  atomic.Pointer[func([]byte) (string, error)]
}

func startDelivery(cfg *config.Config, q *queue.Queue, reg prometheus.Registerer, log *slog.Logger) (*deliverySide, error) {
	dc := delivery.FromConfig(cfg)
	// The suppression list is per pod, like the queue, and lives in the
	// queue's store: one key per address.
	sup, err := delivery.NewSuppressions(q.Suppressions(), cfg.Delivery.SuppressionTTL.Duration, nil)
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
	ds := &deliverySide{log: log, q: q, d: d, sup: sup, cfg: dc}
	// One attempt per connection the engine may open, per destination: a
	// destination at its cap holds no worker (no head-of-line blocking).
	perDest := opts.MaxConnectionsPerDomain
	if perDest <= 0 {
		perDest = 10
	}
	sched, err := scheduler.New(scheduler.Options{Queue: q, Deliverer: d, Retry: dc.Retry, Hostname: cfg.Hostname,
		Concurrency: cfg.Delivery.Concurrency, PerDestination: perDest, Smarthost: opts.Mode == delivery.Smarthost,
		Paused: dc.Paused, Metrics: scheduler.NewMetrics(reg), Sign: ds.signReport,
		Logger: log.With("component", "scheduler")})
	if err != nil {
		d.Close()
		return nil, err
	}
	ds.sched = sched
	return ds, nil
}

// signReports sets how DSNs are DKIM-signed: the intake's keys, which
// exist only once the SMTP server does.
func (ds *deliverySide) signReports(fn func([]byte) (string, error)) { ds.sign.Store(&fn) }

func (ds *deliverySide) signReport(msg []byte) (string, error) {
	if fn := ds.sign.Load(); fn != nil {
		return (*fn)(msg)
	}
	return "", nil
}

// apply follows a reloaded configuration: pause, the retry policy and the
// spool's free-space reserve take effect at once; routing settings need a
// restart.
func (ds *deliverySide) apply(cfg *config.Config) {
	dc := delivery.FromConfig(cfg)
	ds.sched.SetPaused(dc.Paused)
	if err := ds.sched.SetRetry(dc.Retry); err != nil {
		ds.log.Error("relay: delivery.retry not applied", "err", err)
	}
	ds.q.SetReserve(cfg.Queue.MinFreeSpace.Value())
	if !reflect.DeepEqual(dc.Options, ds.cfg.Options) || !reflect.DeepEqual(dc.Resolver, ds.cfg.Resolver) {
		ds.log.Warn("relay: delivery routing settings changed; they apply after a restart")
	}
}

func (ds *deliverySide) adminHandler() http.Handler { return admin.Handler(ds.sched, ds.sup) }

// stop ends deliveries (see scheduler.Shutdown) and closes connections.
func (ds *deliverySide) stop(ctx context.Context) error {
	err := ds.sched.Shutdown(ctx)
	ds.d.Close()
	return err
}
