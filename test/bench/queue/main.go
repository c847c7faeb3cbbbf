// Command queue benchmarks the relay's spool as it grows: with 10k, 100k
// and 1M messages of 5 KB queued and delivery paused, against the same
// relay with an empty queue in the same run, it reports
//
//   - intake rate (smtp-source, 20 sessions, fsync on, DKIM Ed25519) and
//     its ratio to the empty queue's;
//   - per-event scheduling cost, timed in-process on the spool at that
//     size: one state change (an attempt's outcome: read, rewrite, move in
//     the due index, Sync commit - mostly the fsync) and, apart, one
//     due-index query for the next due message;
//   - the relay's RSS after the intake run;
//   - restart-to-ready: SIGTERM, start, until /readyz answers 200;
//   - bytes on disk.
//
// The queue is filled between levels in-process with package queue (the
// relay stopped: the spool has one owner), which is much faster than SMTP
// and stores the same records. Everything listens on 127.0.0.1. Run it as
// root (smtp-source from the postfix package); hack/bench-queue.sh builds
// the binaries and calls it.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/test/bench/benchkit"
)

var (
	relayBin   = flag.String("relay", "bin/relay", "relay binary")
	smtpSource = flag.String("smtp-source", "/usr/sbin/smtp-source", "Postfix smtp-source")
	levels     = flag.String("levels", "10000,100000,1000000", "queue sizes to measure at, comma-separated, increasing")
	probe      = flag.Int("messages", 20000, "messages per intake measurement")
	sessions   = flag.Int("sessions", 20, "concurrent SMTP sessions")
	size       = flag.Int("size", 5120, "message size in bytes")
	events     = flag.Int("events", 2000, "state changes timed per level")
	workDir    = flag.String("dir", "", "work directory (default: a new one under /var/tmp, removed afterwards)")
)

type level struct {
	queued        int
	rate          float64
	eventCost     time.Duration
	queryCost     time.Duration
	rssMiB        float64
	restart       time.Duration
	diskBytes     int64
	liveBodyBytes int64
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, cleanup := benchkit.WorkDir(*workDir, "mailroom-bench-queue-")
	defer cleanup()
	var sizes []int
	for _, s := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		benchkit.Must(err)
		sizes = append(sizes, n)
	}
	fmt.Printf("queue benchmark: delivery paused, %d-byte messages, intake by smtp-source with %d sessions (%d messages per run); work dir %s\n",
		*size, *sessions, *probe, dir)

	r := benchkit.NewRelay(*relayBin, filepath.Join(dir, "relay"), "Ed25519", "{paused: true}")
	qdir := filepath.Join(r.Dir, "queue")
	var results []level
	queued := 0
	measure := func(target int) {
		if target > queued {
			t0 := time.Now()
			fill(qdir, target-queued)
			fmt.Printf("  filled to %d queued in %s\n", target, time.Since(t0).Round(time.Second))
			queued = target
		}
		l := level{queued: queued}
		l.eventCost, l.queryCost = eventCost(qdir)
		t0 := time.Now()
		r.Start()
		l.restart = time.Since(t0)
		el := benchkit.SmtpSource(*smtpSource, r.SMTPAddr, *probe, *sessions, *size, "load@example.com", "sink@example.net", "relay")
		l.rate = float64(*probe) / el.Seconds()
		l.rssMiB = rssMiB(r.PID())
		r.Stop()
		queued += *probe
		l.diskBytes = du(qdir)
		l.liveBodyBytes = int64(queued) * int64(*size)
		fmt.Printf("  %8d queued: intake %6.0f msg/s, state write %7s, due query %7s, RSS %6.1f MiB, restart-to-ready %7s, disk %6.0f MiB\n",
			l.queued, l.rate, l.eventCost.Round(time.Microsecond), l.queryCost.Round(time.Microsecond), l.rssMiB,
			l.restart.Round(time.Millisecond), float64(l.diskBytes)/(1<<20))
		results = append(results, l)
	}
	measure(0)
	for _, n := range sizes {
		measure(n)
	}
	// The empty queue once more, in a fresh directory, after the big
	// levels: on a shared machine the load drifts during a long run, and
	// the baseline is the mean of the two empty runs around them.
	r = benchkit.NewRelay(*relayBin, filepath.Join(dir, "relay-empty"), "Ed25519", "{paused: true}")
	qdir, queued = filepath.Join(r.Dir, "queue"), 0
	measure(0)
	first, last := results[0], results[len(results)-1]
	results = results[:len(results)-1]
	base := level{rate: (first.rate + last.rate) / 2, eventCost: (first.eventCost + last.eventCost) / 2,
		queryCost: (first.queryCost + last.queryCost) / 2}
	fmt.Printf("\nempty-queue baseline: mean of the first and last runs (%.0f and %.0f msg/s)\n", first.rate, last.rate)
	fmt.Printf("\nqueue benchmark results (ratios against the empty queue, same run):\n")
	fmt.Printf("  %-10s %10s %7s %12s %7s %10s %7s %9s %10s %9s\n", "queued", "intake/s", "ratio", "state write", "ratio",
		"due query", "ratio", "RSS MiB", "restart", "disk MiB")
	for _, l := range results {
		fmt.Printf("  %-10d %10.0f %6.2fx %12s %6.2fx %10s %6.2fx %9.1f %10s %9.0f\n", l.queued, l.rate, l.rate/base.rate,
			l.eventCost.Round(time.Microsecond), float64(l.eventCost)/float64(base.eventCost),
			l.queryCost.Round(time.Microsecond), float64(l.queryCost)/float64(base.queryCost), l.rssMiB,
			l.restart.Round(time.Millisecond), float64(l.diskBytes)/(1<<20))
	}
	fmt.Println("  goals: intake ≥ 0.80x at every size; event cost flat; RSS ≤ 300 MiB and restart ≤ 10 s at 1M")
}

// fill commits n messages to the spool directly, from many writers so
// they share fsyncs.
func fill(dir string, n int) {
	q, err := queue.Open(dir, queue.Options{Logger: slog.New(slog.DiscardHandler)})
	benchkit.Must(err)
	defer func() { benchkit.Must(q.Close()) }()
	body := benchkit.BenchMessage(*size, "sink@example.net", "fill@load.bench.test")
	const writers = 128
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				qw, err := q.NewWriter()
				benchkit.Must(err)
				_, err = qw.Write(body)
				benchkit.Must(err)
				benchkit.Must(qw.Commit(queue.Message{From: "load@example.com", Origin: "network:bench",
					Header:     "DKIM-Signature: v=1; a=ed25519-sha256; d=example.com; s=bench; b=fill\r\n",
					Recipients: []queue.Recipient{{Address: fmt.Sprintf("r%d@d%d.example.net", i, i%1000)}}}))
			}
		}()
	}
	wg.Wait()
	// A bulk load leaves compaction work that a queue grown over hours
	// would have done meanwhile: let it finish before measuring.
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	benchkit.Must(q.Settle(ctx))
	fmt.Printf("  (compactions after the fill settled in %s)\n", time.Since(t0).Round(time.Second))
}

// eventCost times what one attempt's bookkeeping costs the spool: the
// outcome's state write (read the record, rewrite it, move its due-index
// entry, Sync commit) and, separately, a due-index query for the next
// page of work; each averaged over -events. Both are timed once the check
// after Open (queue.Scrubbed) is done: it reads the whole store once per
// restart, and on the same disk it would add its own cost to the first
// minutes' state writes, not the per-event cost asked for here.
func eventCost(dir string) (write, query time.Duration) {
	q, err := queue.Open(dir, queue.Options{Logger: slog.New(slog.DiscardHandler)})
	benchkit.Must(err)
	defer func() { benchkit.Must(q.Close()) }()
	w, err := q.NewWriter()
	benchkit.Must(err)
	w.Write(bytes.Repeat([]byte("x"), *size))
	benchkit.Must(w.Commit(queue.Message{From: "load@example.com", Recipients: []queue.Recipient{{Address: "probe@example.net"}}}))
	id := w.ID()
	scrub := time.Now()
	<-q.Scrubbed()
	fmt.Printf("  (the check after open took %s)\n", time.Since(scrub).Round(time.Millisecond))
	now := time.Now()
	start := time.Now()
	for i := range *events {
		m, ok := q.Get(id)
		if !ok {
			log.Fatal("probe message gone")
		}
		m.Attempts++
		m.NextAttempt = now.Add(time.Duration(i%7+1) * time.Minute)
		benchkit.Must(q.Update(m))
	}
	write = time.Since(start) / time.Duration(*events)
	start = time.Now()
	for range *events {
		_, _, err := q.DueBefore(now, queue.Due{}, 1)
		benchkit.Must(err)
	}
	query = time.Since(start) / time.Duration(*events)
	benchkit.Must(q.Remove(id))
	return write, query
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	benchkit.Must(err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func du(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
