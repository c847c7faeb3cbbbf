// Command delivery benchmarks the relay end to end against Postfix on the
// same machine, in the same run (GitHub issue 5): messages are submitted
// by Postfix's smtp-source and delivered to Postfix's smtp-sink, found
// through an MX lookup on a loopback DNS server. Throughput is counted
// from the start of the load to the last 250 the sink sends.
//
// Both MTAs see the same world:
//
//   - a DNS server (miekg/dns, in this process) on port 53 of a private
//     127.x address answers MX dest.bench.test → mx.dest.bench.test → the
//     smtp-sink's 127.x address, and lat.bench.test → a Go sink used only
//     for latency;
//   - the relay is told to use it (delivery.resolvers); Postfix resolves
//     through the system resolver, so its instance runs in a private mount
//     namespace in which a temp resolv.conf naming that server is
//     bind-mounted over /etc/resolv.conf (the host's file is untouched),
//     with chroot off in master.cf so every Postfix process sees it;
//   - both send to port 25; smtp-sink offers no STARTTLS, so both deliver
//     in cleartext (the relay tries STARTTLS opportunistically when offered,
//     Postfix is set to smtp_tls_security_level = none).
//
// Per-message latency (accept → remote 250) cannot be read from
// smtp-source and smtp-sink, so a separate, paced run submits from a Go
// client (one unique recipient per message) and delivers to a Go sink
// that notes when it answered 250 for each recipient.
//
// Run it as root (port 25 and 53, Postfix's master, mount namespaces);
// hack/bench-delivery.sh builds the binaries and calls it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/test/bench/benchkit"
)

var (
	relayBin    = flag.String("relay", "bin/relay", "relay binary")
	smtpSource  = flag.String("smtp-source", "/usr/sbin/smtp-source", "Postfix smtp-source")
	smtpSinkBin = flag.String("smtp-sink", "/usr/sbin/smtp-sink", "Postfix smtp-sink")
	postfixBin  = flag.String("postfix", "/usr/sbin/postfix", "postfix command")
	messages    = flag.Int("messages", 5000, "messages per measured throughput run")
	sessions    = flag.Int("sessions", 20, "concurrent submission sessions")
	size        = flag.Int("size", 5120, "message size in bytes")
	algorithm   = flag.String("dkim", "Ed25519", "DKIM key algorithm of the relay")
	latencyN    = flag.Int("latency-messages", 2000, "messages per latency run (0: no latency runs)")
	latencyRate = flag.Float64("latency-rate", 200, "messages per second offered in the latency runs")
	workDir     = flag.String("dir", "", "work directory (default: a new one under /var/tmp, removed afterwards)")
	timeout     = flag.Duration("timeout", 10*time.Minute, "longest wait for one run's deliveries")
	skipPostfix = flag.Bool("skip-postfix", false, "do not run the Postfix baseline")
)

const (
	throughputDomain = "dest.bench.test"
	latencyDomain    = "lat.bench.test"
	warmup           = 500
)

type result struct {
	name    string
	n       int
	elapsed time.Duration // first accept to last 250 at the sink
	intake  time.Duration // how long smtp-source took to hand everything over
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, cleanup := benchkit.WorkDir(*workDir, "mailroom-bench-delivery-")
	defer cleanup()
	// Postfix's daemons run as the postfix user and must reach their
	// directories below this one.
	benchkit.Must(os.Chmod(dir, 0o755))

	net3 := benchkit.PickNet(".2:25", ".3:25", ".53:53")
	dnsAddr, sinkIP, latIP := net3+".53", net3+".2", net3+".3"
	stopDNS := benchkit.ServeDNS(dnsAddr+":53", map[string]string{throughputDomain: sinkIP, latencyDomain: latIP})
	defer stopDNS()
	sink := benchkit.StartSmtpSink(*smtpSinkBin, sinkIP+":25")
	defer sink.Stop()
	lat := startLatencySink(latIP + ":25")
	defer lat.close()

	fmt.Printf("delivery benchmark: %d messages of %d bytes per run, %d submission sessions (smtp-source), one recipient each;\n", *messages, *size, *sessions)
	fmt.Printf("  DNS %s:53 (MX %s → %s:25 smtp-sink, MX %s → %s:25 Go sink); work dir %s\n", dnsAddr, throughputDomain, sinkIP, latencyDomain, latIP, dir)
	fmt.Printf("  relay: DKIM %s, fsync (group commit), delivery.concurrency 200, maxConnectionsPerDomain 10 (defaults), resolvers [%s:53], port 25, opportunistic STARTTLS (sink offers none: cleartext)\n", *algorithm, dnsAddr)
	fmt.Printf("  postfix %s: no signing, default fsync, default_destination_concurrency_limit 20, default_process_limit 100, initial_destination_concurrency 5,\n", postfixVersion())
	fmt.Printf("    smtp_connection_cache_on_demand yes (all defaults), smtp_tls_security_level none, smtp_host_lookup dns, resolv.conf → %s (private mount namespace)\n", dnsAddr)

	r := benchkit.NewRelay(*relayBin, filepath.Join(dir, "relay"), *algorithm,
		fmt.Sprintf("{resolvers: [%q]}", dnsAddr+":53"))
	r.Start()
	defer r.Stop()
	relayName := fmt.Sprintf("relay, DKIM %s", *algorithm)
	measure(relayName+" warm-up", r.SMTPAddr, sink, warmup)

	var pf *benchkit.Postfix
	postfixName := "postfix, no signing"
	if !*skipPostfix {
		resolv := filepath.Join(dir, "resolv.conf")
		benchkit.Must(os.WriteFile(resolv, []byte("nameserver "+dnsAddr+"\noptions timeout:2 attempts:2\n"), 0o644))
		pf = benchkit.NewPostfix(*postfixBin, filepath.Join(dir, "postfix"), `# Deliver through the benchmark DNS and sink, defaults otherwise.
smtp_tls_security_level = none
disable_dns_lookups = no
smtp_host_lookup = dns
`)
		pf.ResolvConf = resolv
		pf.Start()
		defer pf.Stop()
		measure(postfixName+" warm-up", pf.Addr, sink, warmup)
	}

	// Relay, Postfix, Postfix, relay: drifting load from other processes
	// on the machine affects both alike.
	var relayRuns, postfixRuns []result
	relayRuns = append(relayRuns, measure(relayName, r.SMTPAddr, sink, *messages))
	if pf != nil {
		postfixRuns = append(postfixRuns, measure(postfixName, pf.Addr, sink, *messages), measure(postfixName, pf.Addr, sink, *messages))
	}
	relayRuns = append(relayRuns, measure(relayName, r.SMTPAddr, sink, *messages))
	conns := r.Metric(`mailroom_delivery_connections_total{tls="none",verified="false"}`)
	txs := r.Metric(`mailroom_delivery_transactions_total{tls="none"}`)
	fsyncs := r.Metric("mailroom_queue_commit_batch_records_count")
	records := r.Metric("mailroom_queue_commit_batch_records_sum")
	fmt.Printf("    relay totals: %.0f transactions over %.0f connections; %.0f queue records in %.0f fsyncs\n", txs, conns, records, fsyncs)

	var latRelay, latPostfix []time.Duration
	if *latencyN > 0 {
		latRelay = latencyRun(relayName, r.SMTPAddr, lat)
		if pf != nil {
			latPostfix = latencyRun(postfixName, pf.Addr, lat)
		}
	}

	fmt.Println()
	fmt.Printf("%-36s %9s %10s %10s %9s\n", "throughput (first accept → last 250)", "messages", "msg/s", "intake/s", "seconds")
	for _, runs := range [][]result{relayRuns, postfixRuns} {
		if len(runs) == 0 {
			continue
		}
		for _, x := range runs {
			fmt.Printf("%-36s %9d %10.0f %10.0f %9.2f\n", x.name, x.n, x.rate(), float64(x.n)/x.intake.Seconds(), x.elapsed.Seconds())
		}
		m := mean(runs)
		fmt.Printf("%-36s %9d %10.0f %10.0f %9.2f\n", m.name, m.n, m.rate(), float64(m.n)/m.intake.Seconds(), m.elapsed.Seconds())
	}
	if pf != nil {
		ratio := mean(relayRuns).rate() / mean(postfixRuns).rate()
		verdict := "meets"
		if ratio < 2.5 {
			verdict = "MISSES"
		}
		fmt.Printf("\nrelay / postfix, end to end, mean of 2 runs each: %.2fx (%s the 2.5x floor)\n", ratio, verdict)
	}
	if *latencyN > 0 {
		fmt.Printf("\nend of DATA → delivered latency, %d messages offered at %.0f msg/s from a Go client to a Go sink:\n", *latencyN, *latencyRate)
		for _, l := range []struct {
			name string
			d    []time.Duration
		}{{relayName, latRelay}, {postfixName, latPostfix}} {
			if len(l.d) == 0 {
				continue
			}
			fmt.Printf("  %-34s min %9s  p50 %9s  p99 %9s  max %9s\n", l.name, benchkit.MS(l.d[0]), benchkit.MS(l.d[len(l.d)/2]), benchkit.MS(l.d[len(l.d)*99/100]), benchkit.MS(l.d[len(l.d)-1]))
		}
	}
}

// mean merges runs into one result (total messages over total time).
func mean(runs []result) result {
	m := result{name: fmt.Sprintf("%s, mean of %d", runs[0].name, len(runs))}
	for _, r := range runs {
		m.n += r.n
		m.elapsed += r.elapsed
		m.intake += r.intake
	}
	return m
}

// measure submits n messages to addr with smtp-source and waits until the
// sink has answered 250 to all of them. The clock starts just before
// smtp-source connects (its first accept follows within a round trip) and
// stops at the sink's n-th 250 of this run.
func measure(name, addr string, sink *benchkit.SmtpSink, n int) result {
	base := sink.Count()
	start := time.Now()
	intake := benchkit.SmtpSource(*smtpSource, addr, n, *sessions, *size, "load@example.com", "sink@"+throughputDomain, name)
	end, ok := sink.WaitFor(base+n, *timeout)
	if !ok {
		log.Fatalf("%s: only %d of %d messages reached the sink within %s", name, sink.Count()-base, n, *timeout)
	}
	res := result{name: name, n: n, elapsed: end.Sub(start), intake: intake}
	fmt.Printf("  %s: %d delivered in %s = %.0f msg/s (intake done after %s)\n", name, n, res.elapsed.Round(time.Millisecond), res.rate(), intake.Round(time.Millisecond))
	return res
}

func postfixVersion() string {
	out, err := exec.Command("postconf", "-d", "-h", "mail_version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// latencySink is a Go SMTP server that notes, per recipient, when it
// answered 250 to the message.
type latencySink struct {
	srv *smtp.Server

	mu        sync.Mutex
	delivered map[string]time.Time
	arrived   chan struct{} // signalled on each message
}

func startLatencySink(addr string) *latencySink {
	ls := &latencySink{delivered: map[string]time.Time{}, arrived: make(chan struct{}, 1)}
	ls.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &latencySession{ls: ls}, nil }))
	ls.srv.Addr = addr
	ls.srv.Domain = "lat-sink.bench.test"
	ls.srv.MaxMessageBytes = 1 << 20
	ls.srv.MaxRecipients = 100
	ls.srv.ReadTimeout, ls.srv.WriteTimeout = time.Minute, time.Minute
	l, err := net.Listen("tcp", addr)
	benchkit.Must(err)
	go ls.srv.Serve(l)
	return ls
}

func (ls *latencySink) close() { ls.srv.Close() }

func (ls *latencySink) get(rcpt string) (time.Time, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	t, ok := ls.delivered[rcpt]
	return t, ok
}

type latencySession struct {
	ls    *latencySink
	rcpts []string
}

func (s *latencySession) Reset()                               { s.rcpts = nil }
func (s *latencySession) Logout() error                        { return nil }
func (s *latencySession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *latencySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *latencySession) AuthPlain(string, string) error { return errors.New("no AUTH") }
func (s *latencySession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	now := time.Now()
	s.ls.mu.Lock()
	for _, a := range s.rcpts {
		if _, dup := s.ls.delivered[a]; !dup {
			s.ls.delivered[a] = now
		}
	}
	s.ls.mu.Unlock()
	return nil
}

var latencyRuns atomic.Int32

// latencyRun offers latencyN messages at latencyRate msg/s over sessions
// connections from the trusted network, each to a unique recipient, notes
// each 250, and returns the sorted end-of-DATA → delivered latencies.
func latencyRun(name, addr string, ls *latencySink) []time.Duration {
	run := latencyRuns.Add(1)
	n := *latencyN
	accepted := make([]time.Time, n)
	rcpt := func(i int) string { return fmt.Sprintf("r%d-%d@%s", run, i, latencyDomain) }
	interval := time.Duration(float64(time.Second) / *latencyRate)
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range *sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.Dial(addr)
			benchkit.Must(err)
			defer c.Close()
			benchkit.Must(c.Hello("load.bench.test"))
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					break
				}
				// Message i is offered at start + i*interval: an open
				// arrival schedule, so a slow MTA does not slow the offer.
				time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
				to := rcpt(i)
				body := benchkit.BenchMessage(*size, to, fmt.Sprintf("lat-%d-%d@load.bench.test", run, i))
				benchkit.Must(c.Mail("load@example.com", nil))
				benchkit.Must(c.Rcpt(to, nil))
				wc, err := c.Data()
				benchkit.Must(err)
				_, err = wc.Write(body)
				benchkit.Must(err)
				// The interval starts when the client sends the end of
				// DATA: the MTA accepts after that and can deliver only
				// after accepting, so every latency is a real interval.
				// (Timing from the client reading the 250 is not: a relay
				// that delivers right after its fsync reaches the sink
				// before the reply reaches the client.)
				accepted[i] = time.Now()
				benchkit.Must(wc.Close())
			}
			c.Quit()
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(*timeout)
	var lat []time.Duration
	for i := 0; i < n; i++ {
		for {
			t, ok := ls.get(rcpt(i))
			if ok {
				lat = append(lat, t.Sub(accepted[i]))
				break
			}
			if time.Now().After(deadline) {
				log.Fatalf("%s latency run: message %d never reached the Go sink", name, i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	slices.Sort(lat)
	fmt.Printf("  %s latency: %d messages, p50 %s, p99 %s\n", name, n, benchkit.MS(lat[n/2]), benchkit.MS(lat[n*99/100]))
	return lat
}
