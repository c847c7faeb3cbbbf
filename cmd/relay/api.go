package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/httpapi"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/relay/config"
)

// killAfterCommitEnv, set to 1, makes the relay SIGKILL itself after an
// API message is durable and before its 202 is written: the crash the
// Idempotency-Key tests retry across (cmd/relay/api_test.go).
const killAfterCommitEnv = "MAILROOM_TEST_KILL_AFTER_COMMIT"

// startAPI serves the HTTP send API on listeners.api, if set, and returns
// what stops it. DNS for the address check uses delivery.resolvers.
func startAPI(log *slog.Logger, cfg *config.Config, srv *relay.Server, q *queue.Queue, dl *deliverySide, reg prometheus.Registerer) (func(context.Context), error) {
	if cfg.Listeners.API == "" {
		return func(context.Context) {}, nil
	}
	res, err := delivery.NewResolver(delivery.FromConfig(cfg).Resolver)
	if err != nil {
		return nil, fmt.Errorf("delivery.resolvers: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listeners.API)
	if err != nil {
		return nil, fmt.Errorf("listeners.api: %w", err)
	}
	opts := httpapi.Options{Relay: srv, Queue: q, Suppressions: dl.sup, Resolver: res,
		Logger: log.With("component", "api"), Registerer: reg}
	if os.Getenv(killAfterCommitEnv) == "1" {
		opts.AfterCommit = func(string) { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	}
	api := httpapi.New(opts)
	go func() {
		if err := api.Serve(ln); err != nil {
			log.Error("relay: api", "err", err)
		}
	}()
	log.Info("relay: HTTP API listening", "api", ln.Addr().String())
	return func(ctx context.Context) { _ = api.Shutdown(ctx) }, nil
}
