package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"mailroom.io/mailroom/internal/peer"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/relay/config"
)

// errStopped: a signal ended the wait for a consistent configuration.
var errStopped = errors.New("stopped before the configuration was consistent")

// loadConsistent loads the configuration, waiting while its include shards
// are not consistent with the main file (a projected volume being updated
// Secret by Secret). SIGTERM or SIGINT while waiting returns errStopped.
func loadConsistent(log *slog.Logger, path string, sigs <-chan os.Signal) (*config.Config, error) {
	wait := 200 * time.Millisecond
	for {
		cfg, err := config.Load(path)
		if !errors.Is(err, config.ErrInconsistent) {
			return cfg, err
		}
		log.Info("relay: waiting for consistent config shards", "detail", err.Error())
		select {
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				return nil, errStopped
			}
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// lifecycle runs the shutdown and drain sequences, which share their
// steps: readiness off, limits.shutdownDelay of still accepting, intake
// stopped (limits.shutdownGrace), deliveries stopped
// (delivery.shutdownGrace). Each step runs once whichever sequence gets
// to it first.
type lifecycle struct {
	log  *slog.Logger
	q    *queue.Queue
	dl   *deliverySide
	srv  *relay.Server
	node *peer.Node // nil without a peer section

	intakeOnce, deliveryOnce sync.Once

	mu            sync.Mutex
	intakeStopped bool
	drainCancel   context.CancelFunc // non-nil while a drain runs
	drainWG       sync.WaitGroup
	restartOnce   sync.Once
	restart       chan struct{} // closed: exit so the container restarts
}

// apply is the relay's OnApply: every applied configuration.
func (lc *lifecycle) apply(cfg *config.Config) {
	lc.dl.apply(cfg)
	if lc.node != nil {
		if err := lc.node.Apply(cfg); err != nil {
			lc.log.Error("relay: peer settings not applied; keeping the previous ones", "err", err)
		}
	}
	lc.follow(cfg)
}

// follow starts a drain when cfg lists this relay in drain, and cancels
// one when it no longer does.
func (lc *lifecycle) follow(cfg *config.Config) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	switch {
	case cfg.Draining() && lc.drainCancel == nil && lc.node != nil:
		ctx, cancel := context.WithCancel(context.Background())
		lc.drainCancel = cancel
		lc.drainWG.Add(1)
		go func() {
			defer lc.drainWG.Done()
			lc.drain(ctx, cfg.Limits.ShutdownDelay.Duration)
		}()
	case !cfg.Draining() && lc.drainCancel != nil:
		lc.drainCancel()
		lc.drainCancel = nil
		if lc.intakeStopped {
			// Intake cannot be reopened in this process; a fresh start
			// takes mail again.
			lc.log.Info("relay: no longer listed in drain after intake stopped; exiting so the container restarts")
			lc.restartOnce.Do(func() { close(lc.restart) })
		} else {
			lc.log.Info("relay: no longer listed in drain; taking mail again")
		}
	}
}

func (lc *lifecycle) drain(ctx context.Context, delay time.Duration) {
	lc.log.Info("relay: draining: readiness off; still accepting", "shutdownDelay", delay.String())
	select {
	case <-ctx.Done():
		return
	case <-time.After(delay):
	}
	lc.mu.Lock()
	if ctx.Err() != nil {
		lc.mu.Unlock()
		return
	}
	lc.intakeStopped = true
	lc.mu.Unlock()
	lc.stopIntake()
	// Nothing may be attempted here while it is handed over.
	lc.stopDelivery()
	if err := lc.node.Drain(ctx); err != nil {
		lc.log.Warn("relay: drain interrupted; the rest stays in this relay's queue", "err", err, "queued", lc.q.Len())
		return
	}
	lc.srv.MarkDrained()
}

func (lc *lifecycle) stopIntake() {
	lc.intakeOnce.Do(func() {
		grace := lc.srv.Config().Limits.ShutdownGrace.Duration
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := lc.srv.Shutdown(ctx); err != nil {
			lc.log.Warn("relay: sessions cut off at the shutdown deadline", "grace", grace.String())
		}
	})
}

func (lc *lifecycle) stopDelivery() {
	lc.deliveryOnce.Do(func() {
		// Intake is closed: no new messages. Deliveries in progress finish
		// or are cut off at the deadline; their outcomes are written
		// before the queue closes.
		grace := lc.srv.Config().Delivery.ShutdownGrace.Duration
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := lc.dl.stop(ctx); err != nil {
			lc.log.Warn("relay: deliveries cut off at the shutdown deadline; they are retried after restart", "grace", grace.String())
		}
	})
}

// shutdown is the SIGTERM sequence; skipDelay (SIGINT) leaves out
// limits.shutdownDelay.
func (lc *lifecycle) shutdown(skipDelay bool) {
	lc.mu.Lock()
	if lc.drainCancel != nil {
		lc.drainCancel() // what is not handed over yet stays on this volume
	}
	stopped := lc.intakeStopped
	lc.mu.Unlock()
	lc.drainWG.Wait()
	lc.srv.Terminate()
	if delay := lc.srv.Config().Limits.ShutdownDelay.Duration; !stopped && !skipDelay && delay > 0 {
		// Kubernetes removes the pod from the Service's endpoints
		// asynchronously; until then clients keep arriving and are served.
		time.Sleep(delay)
	}
	lc.stopIntake()
	lc.stopDelivery()
	if lc.node != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = lc.node.Shutdown(ctx)
	}
}
