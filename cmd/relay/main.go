// Command relay is mailroom's outbound mail relay: authenticated submission
// on 587/465, DKIM signing and a durable queue. It runs in the RelayPool's
// pods and equally as a plain process:
//
//	relay --config relay.yaml
//
// The file format is documented in package internal/relay/config. At
// startup the relay waits until the include shards the file lists are
// consistent with it; it reloads the files when they change (or on
// SIGHUP). On SIGTERM it reports not ready at once and keeps accepting for
// limits.shutdownDelay (while Kubernetes takes it out of the Service's
// endpoints), then stops accepting, lets sessions finish within
// limits.shutdownGrace and deliveries within delivery.shutdownGrace, and
// closes the queue: config.ShutdownBudget is the sum. SIGINT skips the
// delay. When the configuration's drain list names this relay (peer.self)
// it does the same without exiting, then hands its queue to the other
// pool members over the peer path (package peer) and reports drained on
// /status.
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

	"mailroom.io/mailroom/internal/peer"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
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
	tuneGC(log)
	if err := run(log, *configPath, *poll); err != nil {
		log.Error("relay: exiting", "err", err)
		os.Exit(1)
	}
}

// walSyncInterval is the least time between the spool's log fsyncs. Under
// load, commits that arrive within it share one fsync instead of each
// starting its own: in bench-delivery (intake and delivery at once) the
// relay did 3,503 fsyncs instead of 15,567 for the same 10,500 messages
// and ran 1.36x faster end to end; intake gained a little, with 7.4
// commits per fsync instead of 2.3. An idle relay syncs at once, so a
// lone message waits no longer.
const walSyncInterval = time.Millisecond

func run(log *slog.Logger, configPath string, poll time.Duration) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	cfg, err := loadConsistent(log, configPath, sigs)
	if errors.Is(err, errStopped) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	m := relay.NewMetrics()
	q, err := queue.Open(cfg.Queue.Directory, queue.Options{Logger: log, OnCommit: m.ObserveCommit,
		Reserve: cfg.Queue.MinFreeSpace.Value(), SyncInterval: walSyncInterval})
	if err != nil {
		return err
	}
	dl, err := startDelivery(cfg, q, m.Registry, log)
	if err != nil {
		q.Close()
		return err
	}
	ev, err := startEvents(cfg, q, dl, m.Registry, log)
	if err != nil {
		q.Close()
		return err
	}
	lc := &lifecycle{log: log, q: q, dl: dl, restart: make(chan struct{})}
	if cfg.Peer != nil {
		lc.node, err = peer.New(peer.Options{Spool: q, Logger: log.With("component", "peer"), Registerer: m.Registry}, cfg)
		if err != nil {
			ev.stop()
			dl.stop(context.Background())
			q.Close()
			return err
		}
	}
	shareSuppressions(lc.node, dl.sup, log.With("component", "peer")) // before the peer listener serves
	srv, err := relay.New(relay.Options{Config: cfg, ConfigPath: configPath, Queue: q, Logger: log, Metrics: m,
		OnApply: ev.follow(lc.apply), OnQueued: ev.queued})
	if err != nil {
		ev.stop()
		dl.stop(context.Background())
		q.Close()
		return err
	}
	lc.srv = srv
	dl.signReports(srv.SignReport)
	fail := func(err error) error {
		srv.Shutdown(context.Background())
		ev.stop()
		dl.stop(context.Background())
		q.Close()
		return err
	}
	al, err := net.Listen("tcp", cfg.Listeners.Admin)
	if err != nil {
		return fail(fmt.Errorf("listeners.admin: %w", err))
	}
	as := &http.Server{Handler: ev.admin(dl.adminHandler()), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := as.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("relay: admin http", "err", err)
		}
	}()
	hl, err := net.Listen("tcp", cfg.Listeners.HTTP)
	if err != nil {
		return fail(fmt.Errorf("listeners.http: %w", err))
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("relay: http", "err", err)
		}
	}()
	stopAPI, err := startAPI(log, cfg, srv, q, dl, m.Registry)
	if err != nil {
		return fail(err)
	}
	if lc.node != nil {
		pl, err := net.Listen("tcp", cfg.Listeners.Peer)
		if err != nil {
			return fail(fmt.Errorf("listeners.peer: %w", err))
		}
		go func() {
			if err := lc.node.Serve(pl); err != nil {
				log.Error("relay: peer listener", "err", err)
			}
		}()
		log.Info("relay: peer path listening", "peer", pl.Addr().String(), "self", cfg.Peer.Self)
	}
	dl.sched.Start()
	log.Info("relay: ready", "http", hl.Addr().String(), "admin", al.Addr().String(), "queue", cfg.Queue.Directory,
		"queued", q.Len(), "revision", cfg.Revision)
	lc.follow(cfg)

	ctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	srv.WatchConfig(ctx, poll)

	var sig os.Signal
wait:
	for {
		select {
		case sig = <-sigs:
			if sig == syscall.SIGHUP {
				_ = srv.Reload()
				continue
			}
			break wait
		case <-lc.restart:
			break wait
		}
	}
	stopWatch()
	lc.shutdown(sig == syscall.SIGINT)
	hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer hcancel()
	_ = hs.Shutdown(hctx)
	stopAPI(hctx)
	_ = as.Shutdown(hctx)
	ev.stop()
	if err := q.Close(); err != nil {
		return fmt.Errorf("closing queue: %w", err)
	}
	log.Info("relay: stopped cleanly")
	return nil
}
