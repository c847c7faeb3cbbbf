package scheduler_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/scheduler"
	"mailroom.io/mailroom/internal/testutil/dnstest"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// TestAStalledDestinationDoesNotHoldUpHealthyOnes queues 10,000 messages
// for a destination that accepts TCP connections and then never says a
// word, and 100 for a healthy one, with the real delivery engine. The
// healthy ones are all delivered while the stalled destination keeps its
// connections (at most its cap) hanging: a destination at its cap holds
// no worker.
func TestAStalledDestinationDoesNotHoldUpHealthyOnes(t *testing.T) {
	const stalledBacklog, healthy, perDest = 10000, 100, 10
	lns := smtpsink.ListenShared(t, "127.78.0.1", "127.78.0.2")
	port := lns[0].Addr().(*net.TCPAddr).Port
	sink := smtpsink.Serve(t, lns[1], smtpsink.Options{Hostname: "mx.ok.test"})
	// The stalled server: accepts, reads nothing, answers nothing.
	var open, maxOpen atomic.Int64
	var conns sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			c, err := lns[0].Accept()
			if err != nil {
				return
			}
			n := open.Add(1)
			for m := maxOpen.Load(); n > m && !maxOpen.CompareAndSwap(m, n); m = maxOpen.Load() {
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				<-stop
				c.Close()
				open.Add(-1)
			}()
		}
	}()
	t.Cleanup(func() { close(stop); lns[0].Close(); conns.Wait() })

	dns := dnstest.Start(t)
	dns.Add(t, "stall.test. 300 IN MX 10 mx.stall.test.", "mx.stall.test. 300 IN A 127.78.0.1",
		"ok.test. 300 IN MX 10 mx.ok.test.", "mx.ok.test. 300 IN A 127.78.0.2")

	q, err := queue.Open(filepath.Join(t.TempDir(), "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	enqueueMany(t, q, stalledBacklog, "u@stall.test")
	healthyIDs := enqueueMany(t, q, healthy, "u@ok.test")

	res, err := delivery.NewResolver(delivery.ResolverOptions{Servers: []string{dns.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := delivery.New(delivery.Options{Hostname: "relay.test", Resolver: res, Port: port, MaxConnectionsPerDomain: perDest,
		Timeouts: delivery.Timeouts{Connect: 20 * time.Second, Command: 10 * time.Minute, DataBlock: time.Minute, FinalDot: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := scheduler.New(scheduler.Options{Queue: q, Deliverer: d, Hostname: "relay.test", Concurrency: 100, PerDestination: perDest,
		Retry: delivery.RetryPolicy{Schedule: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Start()
	defer func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s.Shutdown(ctx)
		d.Close()
	}()
	eventually(t, "every healthy message is delivered", func() bool {
		for _, id := range healthyIDs {
			if _, queued := q.Get(id); queued {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	if n := len(sink.Accepted()); n != healthy {
		t.Fatalf("the healthy destination accepted %d messages, want %d", n, healthy)
	}
	if m := maxOpen.Load(); m > perDest {
		t.Fatalf("the stalled destination had %d connections open; the cap is %d", m, perDest)
	}
	if open.Load() == 0 {
		t.Fatal("the stalled destination was never tried: the test proves nothing")
	}
	if q.Len() != stalledBacklog {
		t.Fatalf("%d messages left, want the %d stalled ones", q.Len(), stalledBacklog)
	}
	t.Logf("%d healthy messages delivered in %s beside a stalled destination with %d queued (%d connections hanging)",
		healthy, took.Round(time.Millisecond), stalledBacklog, open.Load())
}

// enqueueMany commits n messages to rcpt over concurrent writers (they
// share fsyncs) and returns their ids.
func enqueueMany(t *testing.T, q *queue.Queue, n int, rcpt string) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	const writers = 64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				qw, err := q.NewWriter()
				if err == nil {
					fmt.Fprintf(qw, "From: <app@example.com>\r\nTo: <%s>\r\nSubject: %d\r\n\r\nHello.\r\n", rcpt, i)
					err = qw.Commit(queue.Message{From: "app@example.com", Recipients: []queue.Recipient{{Address: rcpt}}})
				}
				if err != nil {
					failed.Store(err)
					return
				}
				ids[i] = qw.ID()
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	return ids
}
