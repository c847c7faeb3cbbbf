// Command intake benchmarks the relay's accept path against Postfix on the
// same machine, in the same run: throughput and latency of accepting ≈5 KB
// messages from 20 concurrent sessions with fsync on.
//
//  1. the relay (built binary, trusted network, DKIM signing) loaded by
//     Postfix's smtp-source;
//  2. a throwaway Postfix instance in a temp dir (default fsync behaviour,
//     defer_transports = smtp so nothing is delivered) loaded the same way;
//  3. the relay loaded by a Go client over STARTTLS with AUTH PLAIN, timing
//     every transaction for latency percentiles;
//  4. the relay with each further DKIM algorithm (-dkim) loaded by
//     smtp-source; for RSA2048, compared with a second throwaway Postfix
//     instance that has OpenDKIM (run in the foreground from a temp config,
//     never the package's service) signing every message with an RSA-2048
//     key as a milter, the setup users actually run.
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
	skipPostfix = flag.Bool("skip-postfix", false, "do not run the Postfix baselines")
	opendkimBin = flag.String("opendkim", "/usr/sbin/opendkim", "OpenDKIM milter")
	genkeyBin   = flag.String("opendkim-genkey", "/usr/sbin/opendkim-genkey", "OpenDKIM's key generator")
	skipDKIM    = flag.Bool("skip-opendkim", false, "do not run the Postfix + OpenDKIM baseline")
	dkimSocket  = flag.String("opendkim-socket", "unix", "socket between Postfix and OpenDKIM: unix (in the work dir; Debian's default) or inet (127.0.0.1, which stalls each message ~80 ms on TCP delayed ACKs)")
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
	dir, cleanup := benchkit.WorkDir(*workDir, "mailroom-bench-")
	defer cleanup()
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
		// Postfix's queue manager goes on working through what it just
		// accepted (deferring it) after smtp-source is done; stopped here,
		// that work does not run during the relay's second run.
		pf.stop()
		pf.checkQueued(warmup + 2**messages)
		results = append(results, mean(postfixRuns))
	}
	relayRuns = append(relayRuns, runSmtpSource(relayName, r.SMTPAddr))
	r.checkAccepted(warmup + 2**messages)
	results = append([]result{mean(relayRuns)}, results...)

	// The same relay with AUTH over TLS, from a Go client that times every
	// transaction.
	results = append(results, runGoClient(fmt.Sprintf("relay, STARTTLS + AUTH PLAIN, DKIM %s (Go client)", algs[0]), r))
	r.stop()

	// Other signing algorithms, for their cost. RSA2048 is also compared
	// with Postfix + OpenDKIM signing with RSA-2048, in the order relay,
	// Postfix + OpenDKIM, Postfix + OpenDKIM, relay, as above.
	var rsaRuns, dkimRuns []result
	withOpenDKIM := !*skipPostfix && !*skipDKIM
	for _, alg := range algs[1:] {
		r := newRelay(filepath.Join(dir, "relay-"+alg), alg)
		r.start()
		name := fmt.Sprintf("relay, trusted network, DKIM %s (smtp-source)", alg)
		smtpSourceRun(r.SMTPAddr, warmup, name+" warm-up")
		if alg != rsaAlg || !withOpenDKIM {
			res := runSmtpSource(name, r.SMTPAddr)
			r.checkAccepted(warmup + *messages)
			results = append(results, res)
			r.stop()
			continue
		}
		od := benchkit.NewOpenDKIM(*opendkimBin, *genkeyBin, filepath.Join(dir, "opendkim"), "example.com", "bench", 2048, *dkimSocket)
		od.Start()
		pd := newPostfixOpenDKIM(filepath.Join(dir, "postfix-opendkim"), od)
		pd.start()
		dkimName := "postfix 3.x + OpenDKIM RSA2048 (smtp-source)"
		if *dkimSocket != "inet" {
			dkimName = "postfix 3.x + OpenDKIM RSA2048 " + *dkimSocket + " (smtp-source)"
		}
		before := pd.QueueIDs()
		smtpSourceRun(pd.Addr, warmup, dkimName+" warm-up")
		before = pd.checkSigned(before, dkimName+" warm-up")
		rsaRuns = append(rsaRuns, runSmtpSource(name, r.SMTPAddr))
		for range 2 {
			dkimRuns = append(dkimRuns, runSmtpSource(dkimName, pd.Addr))
			before = pd.checkSigned(before, dkimName)
		}
		rsaRuns = append(rsaRuns, runSmtpSource(name, r.SMTPAddr))
		r.checkAccepted(warmup + 2**messages)
		r.stop()
		pd.stop()
		od.Stop()
		pd.checkQueued(warmup + 2**messages)
		pd.checkAllSigned()
		results = append(results, mean(rsaRuns), mean(dkimRuns))
	}
	if withOpenDKIM && dkimRuns == nil {
		fmt.Printf("  (no postfix + OpenDKIM baseline: it runs with %s, which -dkim lists only first or not at all)\n", rsaAlg)
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
	if dkimRuns != nil {
		fmt.Printf("relay (DKIM %s) / postfix + OpenDKIM (%[1]s), smtp-source, mean of 2 runs each: %.2fx\n", rsaAlg, mean(rsaRuns).rate()/mean(dkimRuns).rate())
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

// rsaAlg is the relay's DKIM algorithm compared with Postfix + OpenDKIM.
const rsaAlg = "RSA2048"

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
type postfix struct {
	*benchkit.Postfix
	od *benchkit.OpenDKIM // the signing milter, if any
}

func newPostfix(dir string) *postfix {
	return &postfix{Postfix: benchkit.NewPostfix(*postfixBin, dir, "# Accept and queue, never deliver.\ndefer_transports = smtp\n")}
}

func (p *postfix) start() { p.Start() }
func (p *postfix) stop()  { p.Stop() }

// newPostfixOpenDKIM is the same throwaway Postfix with od as its smtpd
// milter; a milter failure tempfails the message, so nothing is queued
// unsigned.
func newPostfixOpenDKIM(dir string, od *benchkit.OpenDKIM) *postfix {
	return &postfix{benchkit.NewPostfix(*postfixBin, dir, "# Accept and queue, never deliver.\ndefer_transports = smtp\n"+
		"# Sign with OpenDKIM; never queue unsigned.\nsmtpd_milters = "+od.Milter()+"\nnon_smtpd_milters =\n"+
		"milter_default_action = tempfail\nmilter_protocol = 6\n"), od}
}

// checkSigned verifies one message queued since before (queue IDs) was
// taken, as stored by Postfix, against the OpenDKIM key, and returns the
// queue IDs now.
func (p *postfix) checkSigned(before map[string]bool, name string) map[string]bool {
	now := p.QueueIDs()
	for id := range now {
		if !before[id] {
			if err := p.od.Verify(p.Message(id)); err != nil {
				log.Fatalf("%s: queued message %s: %v", name, id, err)
			}
			fmt.Printf("    %s: queued message %s carries a valid DKIM-Signature (a=rsa-sha256, c=relaxed/relaxed, d=%s, s=%s)\n",
				name, id, p.od.Domain, p.od.Selector)
			return now
		}
	}
	log.Fatalf("%s: no new queued message to check", name)
	return nil
}

// checkAllSigned makes sure every queue file holds a DKIM-Signature.
func (p *postfix) checkAllSigned() {
	with, all := p.CountQueuedWith("DKIM-Signature:")
	if with != all {
		log.Fatalf("postfix + OpenDKIM: %d of %d queued messages have no DKIM-Signature", all-with, all)
	}
	fmt.Printf("    all %d queued messages carry a DKIM-Signature\n", all)
}

// checkQueued counts queue files, so Postfix is known to have queued (not
// dropped) the load.
func (p *postfix) checkQueued(want int) {
	if n := p.Queued(); n < want {
		log.Fatalf("postfix queued %d messages, want %d", n, want)
	}
}

var must = benchkit.Must
