// Command relay is mailroom's outbound mail relay: authenticated submission
// on 587/465, DKIM signing and a durable queue. It runs in the RelayPool's
// pods and equally as a plain process:
//
//	relay --config relay.yaml
//
// The file format is documented in package internal/relay/config. The
// relay reloads it when it changes (or on SIGHUP); on SIGTERM it reports
// not ready, stops accepting, lets sessions finish within
// limits.shutdownGrace, lets deliveries in progress finish within
// delivery.shutdownGrace, and closes the queue.
//
// It also delivers the queue (package scheduler over package delivery) and
// serves the admin API on listeners.admin (loopback only). The queue
// subcommand is that API's client:
//
//	relay queue [-admin 127.0.0.1:8081] [-json] list [-state S] [-domain D]
//	relay queue show ID | retry ID | hold ID | release ID
//	relay queue delete [-bounce] ID
//	relay queue quarantine | suppressions | unsuppress ADDRESS
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/relay/config"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "queue" {
		os.Exit(queueCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	configPath := flag.String("config", "/etc/mailroom/relay.yaml", "path of the relay configuration file")
	logFormat := flag.String("log-format", "json", `log format: "json" or "text"`)
	poll := flag.Duration("config-poll", 30*time.Second, "how often to compare config files even without change events")
	flag.Parse()

	var h slog.Handler = slog.NewJSONHandler(os.Stderr, nil)
	if *logFormat == "text" {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	log := slog.New(h)
	slog.SetDefault(log)
	if err := run(log, *configPath, *poll); err != nil {
		log.Error("relay: exiting", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, configPath string, poll time.Duration) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	m := relay.NewMetrics()
	q, err := queue.Open(cfg.Queue.Directory, queue.Options{Logger: log, OnCommit: m.ObserveCommit,
		Reserve: cfg.Queue.MinFreeSpace.Value()})
	if err != nil {
		return err
	}
	dl, err := startDelivery(cfg, q, m.Registry, log)
	if err != nil {
		q.Close()
		return err
	}
	srv, err := relay.New(relay.Options{Config: cfg, ConfigPath: configPath, Queue: q, Logger: log, Metrics: m,
		OnApply: dl.apply})
	if err != nil {
		dl.stop(context.Background())
		q.Close()
		return err
	}
	dl.signReports(srv.SignReport)
	al, err := net.Listen("tcp", cfg.Listeners.Admin)
	if err != nil {
		srv.Shutdown(context.Background())
		dl.stop(context.Background())
		q.Close()
		return fmt.Errorf("listeners.admin: %w", err)
	}
	as := &http.Server{Handler: dl.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := as.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("relay: admin http", "err", err)
		}
	}()
	hl, err := net.Listen("tcp", cfg.Listeners.HTTP)
	if err != nil {
		srv.Shutdown(context.Background())
		dl.stop(context.Background())
		q.Close()
		return fmt.Errorf("listeners.http: %w", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("relay: http", "err", err)
		}
	}()
	dl.sched.Start()
	log.Info("relay: ready", "http", hl.Addr().String(), "admin", al.Addr().String(), "queue", cfg.Queue.Directory, "queued", q.Len())

	ctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	srv.WatchConfig(ctx, poll)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			_ = srv.Reload()
			continue
		}
		break
	}
	signal.Stop(sigs)
	stopWatch()

	grace := srv.Config().Limits.ShutdownGrace.Duration
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// Readiness turns false at once (Shutdown sets it first), so the
	// Service stops sending new clients while sessions finish.
	err = srv.Shutdown(sctx)
	if err != nil {
		log.Warn("relay: sessions cut off at the shutdown deadline", "grace", grace.String())
	}
	// Intake is closed: no new messages. Deliveries in progress finish or
	// are cut off at the deadline; their outcomes are written before the
	// queue closes.
	dgrace := srv.Config().Delivery.ShutdownGrace.Duration
	dctx, dcancel := context.WithTimeout(context.Background(), dgrace)
	defer dcancel()
	if err := dl.stop(dctx); err != nil {
		log.Warn("relay: deliveries cut off at the shutdown deadline; they are retried after restart", "grace", dgrace.String())
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	_ = hs.Shutdown(hctx)
	_ = as.Shutdown(hctx)
	if err := q.Close(); err != nil {
		return fmt.Errorf("closing queue: %w", err)
	}
	log.Info("relay: stopped cleanly")
	return nil
}
