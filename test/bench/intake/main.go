// Command intake benchmarks the relay's accept path against Postfix on the
// same machine, in the same run: throughput and latency of accepting ≈5 KB
// messages from 20 concurrent sessions with fsync on.
//
//  1. the relay (built binary, trusted network, DKIM signing) loaded by
//     Postfix's smtp-source;
//  2. a throwaway Postfix instance in a temp dir (default fsync behaviour,
//     defer_transports = smtp so nothing is delivered) loaded the same way;
//  3. the relay loaded by a Go client over STARTTLS with AUTH PLAIN, timing
//     every transaction for latency percentiles.
//
// Everything listens on 127.0.0.1 only. Run it as root (Postfix's master
// must start as root); hack/bench-intake.sh builds the binaries and calls
// it.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/test/bench/benchkit"
)

var (
	relayBin    = flag.String("relay", "bin/relay", "relay binary")
	smtpSource  = flag.String("smtp-source", "/usr/sbin/smtp-source", "Postfix smtp-source")
	postfixBin  = flag.String("postfix", "/usr/sbin/postfix", "postfix command")
	messages    = flag.Int("messages", 20000, "messages per measured run")
	sessions    = flag.Int("sessions", 20, "concurrent SMTP sessions")
	size        = flag.Int("size", 5120, "message size in bytes")
	workDir     = flag.String("dir", "", "work directory (default: a new one under /var/tmp, removed afterwards)")
	algorithms  = flag.String("dkim", "Ed25519,RSA2048", "DKIM key algorithms for the smtp-source relay runs, comma-separated")
	skipPostfix = flag.Bool("skip-postfix", false, "do not run the Postfix baseline")
)

type result struct {
	name     string
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("/var/tmp", "mailroom-bench-")
		if err != nil {
			log.Fatal(err)
		}
		dir = d
		defer os.RemoveAll(dir)
	}
	// Postfix's daemons run as the postfix user and must reach their
	// directories below this one.
	must(os.Chmod(dir, 0o755))
	fmt.Printf("intake benchmark: %d messages of %d bytes, %d concurrent sessions, fsync on; work dir %s\n",
		*messages, *size, *sessions, dir)

	algs := strings.Split(*algorithms, ",")
	var results []result

	// The main comparison: the relay and Postfix, both loaded by
	// smtp-source, in the order relay, Postfix, Postfix, relay, so that
	// load from other processes drifting during the run affects both
	// alike. Each gets a warm-up first.
	r := newRelay(filepath.Join(dir, "relay-"+algs[0]), algs[0])
	r.start()
	relayName := fmt.Sprintf("relay, trusted network, DKIM %s (smtp-source)", algs[0])
	smtpSourceRun(r.SMTPAddr, warmup, relayName+" warm-up")
	var pf *postfix
	postfixName := "postfix 3.x, mynetworks, no signing (smtp-source)"
	if !*skipPostfix {
		pf = newPostfix(filepath.Join(dir, "postfix"))
		pf.start()
		smtpSourceRun(pf.Addr, warmup, postfixName+" warm-up")
	}
	var relayRuns, postfixRuns []result
	relayRuns = append(relayRuns, runSmtpSource(relayName, r.SMTPAddr))
	if pf != nil {
		postfixRuns = append(postfixRuns, runSmtpSource(postfixName, pf.Addr), runSmtpSource(postfixName, pf.Addr))
	}
	relayRuns = append(relayRuns, runSmtpSource(relayName, r.SMTPAddr))
	r.checkAccepted(warmup + 2**messages)
	results = append(results, mean(relayRuns))
	if pf != nil {
		pf.stop()
		pf.checkQueued(warmup + 2**messages)
		results = append(results, mean(postfixRuns))
	}

	// The same relay with AUTH over TLS, from a Go client that times every
	// transaction.
	results = append(results, runGoClient(fmt.Sprintf("relay, STARTTLS + AUTH PLAIN, DKIM %s (Go client)", algs[0]), r))
	r.stop()

	// Other signing algorithms, for their cost.
	for _, alg := range algs[1:] {
		r := newRelay(filepath.Join(dir, "relay-"+alg), alg)
		r.start()
		name := fmt.Sprintf("relay, trusted network, DKIM %s (smtp-source)", alg)
		smtpSourceRun(r.SMTPAddr, warmup, name+" warm-up")
		res := runSmtpSource(name, r.SMTPAddr)
		r.checkAccepted(warmup + *messages)
		results = append(results, res)
		r.stop()
	}

	fmt.Println()
	fmt.Printf("%-62s %10s %9s %9s %9s\n", "run", "messages", "msg/s", "p50", "p99")
	for _, r := range results {
		p50, p99 := "-", "-"
		if r.p99 > 0 {
			p50, p99 = ms(r.p50), ms(r.p99)
		}
		fmt.Printf("%-62s %10d %9.0f %9s %9s\n", r.name, r.n, r.rate(), p50, p99)
	}
	if pf != nil {
		fmt.Printf("\nrelay (DKIM %s) / postfix, smtp-source, mean of 2 runs each: %.2fx\n", algs[0], mean(relayRuns).rate()/mean(postfixRuns).rate())
	}
}

// mean merges runs into one result (total messages over total time).
func mean(runs []result) result {
	m := result{name: runs[0].name + fmt.Sprintf(", %d runs", len(runs))}
	for _, r := range runs {
		m.n += r.n
		m.elapsed += r.elapsed
	}
	return m
}

var ms = benchkit.MS

const warmup = 500

// smtpSourceRun sends n messages to addr with smtp-source and times it.
func smtpSourceRun(addr string, n int, name string) time.Duration {
	return benchkit.SmtpSource(*smtpSource, addr, n, *sessions, *size, "load@example.com", "sink@example.net", name)
}

// runSmtpSource is one measured smtp-source run.
func runSmtpSource(name, addr string) result {
	elapsed := smtpSourceRun(addr, *messages, name)
	fmt.Printf("  %s: %d in %s = %.0f msg/s\n", name, *messages, elapsed.Round(time.Millisecond), float64(*messages)/elapsed.Seconds())
	return result{name: name, n: *messages, elapsed: elapsed}
}

// relay adds the intake checks to the benchmark relay.
type relay struct{ *benchkit.Relay }

func newRelay(dir, alg string) *relay {
	return &relay{benchkit.NewRelay(*relayBin, dir, alg, "{paused: true}")}
}

func (r *relay) start() { r.Start() }
func (r *relay) stop()  { r.Stop() }

// checkAccepted makes sure the relay really queued what smtp-source sent.
func (r *relay) checkAccepted(want int) {
	if got := int(r.Metric("mailroom_queue_depth")); got < want {
		log.Fatalf("relay queued %d messages, want %d", got, want)
	}
	sum, count := r.Metric("mailroom_queue_commit_batch_records_sum"), r.Metric("mailroom_queue_commit_batch_records_count")
	fmt.Printf("    group commit: %.0f records in %.0f fsyncs (%.1f per fsync)\n", sum, count, sum/count)
}

// runGoClient loads the relay over STARTTLS + AUTH PLAIN, one long session
// per worker, and times each transaction from MAIL to the 250 after DATA.
func runGoClient(name string, r *relay) result {
	body := benchMessage(*size)
	tlsCfg := r.TLSConfig()
	run := func(n int) (time.Duration, []time.Duration) {
		var next atomic.Int64
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < *sessions; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := smtp.DialStartTLS(r.SMTPAddr, tlsCfg)
				must(err)
				defer c.Close()
				must(c.Auth(sasl.NewPlainClient("", benchkit.User, benchkit.Password)))
				var mine []time.Duration
				for next.Add(1) <= int64(n) {
					t0 := time.Now()
					must(c.Mail("load@example.com", nil))
					must(c.Rcpt("sink@example.net", nil))
					wc, err := c.Data()
					must(err)
					_, err = wc.Write(body)
					must(err)
					must(wc.Close())
					mine = append(mine, time.Since(t0))
				}
				c.Quit()
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return time.Since(start), lat
	}
	run(warmup)
	elapsed, lat := run(*messages)
	slices.Sort(lat)
	res := result{name: name, n: *messages, elapsed: elapsed, p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
	fmt.Printf("  %s: %d in %s = %.0f msg/s, p50 %s, p99 %s\n", name, res.n, elapsed.Round(time.Millisecond), res.rate(), ms(res.p50), ms(res.p99))
	return res
}

func benchMessage(n int) []byte {
	return benchkit.BenchMessage(n, "sink@example.net", "bench@load.test")
}

// postfix is a throwaway Postfix instance that accepts and queues but
// never delivers.
type postfix struct{ *benchkit.Postfix }

func newPostfix(dir string) *postfix {
	return &postfix{benchkit.NewPostfix(*postfixBin, dir, "# Accept and queue, never deliver.\ndefer_transports = smtp\n")}
}

func (p *postfix) start() { p.Start() }
func (p *postfix) stop()  { p.Stop() }

// checkQueued counts queue files, so Postfix is known to have queued (not
// dropped) the load.
func (p *postfix) checkQueued(want int) {
	if n := p.Queued(); n < want {
		log.Fatalf("postfix queued %d messages, want %d", n, want)
	}
}

var must = benchkit.Must
