// Command webhook measures what delivery-event webhooks (GitHub issue 13)
// cost the relay's end-to-end throughput: one relay process takes ≈5 KB
// messages from 20 concurrent Go clients (STARTTLS + AUTH PLAIN, one
// session each, all authenticated before the clock starts), looks up the
// recipient domain's MX on a loopback DNS server and delivers to
// Postfix's smtp-sink. Throughput is counted from the first MAIL FROM to
// the last 250 the sink sends, in two configurations of the same relay:
//
//   - the credential without a webhook;
//   - the credential with a webhook for every event type, posted to a Go
//     HTTP receiver in this process (127.0.0.1) that checks each post's
//     webhook-id, webhook-timestamp and webhook-signature (verified with
//     the credential's secret), counts the events by type and answers 204.
//
// The runs alternate without, with, with, without, so drifting load from
// other processes on the machine affects both alike; between them the
// relay's configuration file is rewritten and reloaded (SIGHUP; the relay
// reports the new revision once applied). A webhook run ends only when
// every queued and delivered event of its messages has been posted; it
// reports the posts per second (from the first MAIL FROM to the last post)
// and how long after the last 250 the last post arrived. The verdict is
// the ratio with webhooks / without against the target: webhooks may cost
// at most 20% of end-to-end throughput (ratio ≥ 0.8).
//
// Run it as root (port 25 and 53; smtp-sink drops to the postfix user);
// hack/bench-delivery.sh builds it and runs it after the delivery
// benchmark, with the same flags (those of the delivery benchmark that
// mean nothing here are accepted and ignored). Everything listens on
// 127.x.y.z.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"mailroom.io/mailroom/test/bench/benchkit"
)

var (
	relayBin    = flag.String("relay", "bin/relay", "relay binary")
	smtpSinkBin = flag.String("smtp-sink", "/usr/sbin/smtp-sink", "Postfix smtp-sink")
	messages    = flag.Int("messages", 5000, "messages per measured run")
	sessions    = flag.Int("sessions", 20, "concurrent authenticated SMTP clients")
	size        = flag.Int("size", 5120, "message size in bytes")
	algorithm   = flag.String("dkim", "Ed25519", "DKIM key algorithm of the relay")
	workDir     = flag.String("dir", "", "work directory (default: a new one under /var/tmp, removed afterwards)")
	timeout     = flag.Duration("timeout", 10*time.Minute, "longest wait for one run's deliveries, and again for its webhook posts")
)

func init() {
	// The delivery benchmark's flags, which hack/bench-delivery.sh passes
	// to both benchmarks; they mean nothing here.
	flag.String("smtp-source", "", "ignored (delivery benchmark's flag)")
	flag.String("postfix", "", "ignored (delivery benchmark's flag)")
	flag.Int("latency-messages", 0, "ignored (delivery benchmark's flag)")
	flag.Float64("latency-rate", 0, "ignored (delivery benchmark's flag)")
	flag.Bool("skip-postfix", false, "ignored (delivery benchmark's flag)")
}

const (
	domain = "dest.bench.test"
	rcpt   = "sink@" + domain
	// warmup messages are sent in each configuration before the runs.
	warmup = 500
	// target is the lowest acceptable ratio with webhooks / without.
	target = 0.8
)

type result struct {
	name    string
	hook    bool
	n       int
	elapsed time.Duration // first MAIL FROM to last 250 at the sink
	intake  time.Duration // until the relay accepted every message
	posts   int           // distinct events posted (webhook-id)
	toPost  time.Duration // first MAIL FROM to the last post
	lag     time.Duration // last 250 at the sink to the last post
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, cleanup := benchkit.WorkDir(*workDir, "mailroom-bench-webhook-")
	defer cleanup()

	net3 := benchkit.PickNet(".2:25", ".53:53")
	dnsAddr, sinkIP := net3+".53", net3+".2"
	stopDNS := benchkit.ServeDNS(dnsAddr+":53", map[string]string{domain: sinkIP})
	defer stopDNS()
	sink := benchkit.StartSmtpSink(*smtpSinkBin, sinkIP+":25")
	defer sink.Stop()

	key := make([]byte, 32)
	_, err := rand.Read(key)
	benchkit.Must(err)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	rc := newReceiver(secret)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	benchkit.Must(err)
	hs := &http.Server{Handler: rc, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(hl)
	defer hs.Close()
	hookURL := "http://" + hl.Addr().String() + "/events"

	r := benchkit.NewRelay(*relayBin, filepath.Join(dir, "webhook-relay"), *algorithm,
		fmt.Sprintf("{resolvers: [%q]}", dnsAddr+":53"))
	c := newConfigs(r, hookURL, secret)
	c.write(false)
	r.Start()
	defer r.Stop()

	fmt.Printf("webhook benchmark: %d messages of %d bytes per run, %d SMTP clients (Go, STARTTLS + AUTH PLAIN as %s), one recipient each;\n",
		*messages, *size, *sessions, benchkit.User)
	fmt.Printf("  one relay (DKIM %s, fsync, delivery defaults, resolvers [%s:53]) → MX %s → %s:25 smtp-sink; work dir %s\n",
		*algorithm, dnsAddr, domain, sinkIP, dir)
	fmt.Printf("  with webhook: every event type to %s (Go receiver: verifies webhook-id/-timestamp/-signature, answers 204)\n", hookURL)

	msg := benchkit.BenchMessage(*size, rcpt, "bench@load.bench.test")
	b := &bench{r: r, sink: sink, rc: rc, c: c, msg: msg}
	w := min(warmup, *messages)
	b.run("warm-up, no webhook", false, w)
	b.run("warm-up, webhook", true, w)
	var without, with []result
	without = append(without, b.run("no webhook", false, *messages))
	with = append(with, b.run("webhook, all types", true, *messages), b.run("webhook, all types", true, *messages))
	without = append(without, b.run("no webhook", false, *messages))

	fmt.Println()
	fmt.Printf("%-36s %9s %9s %9s %8s %8s %9s %10s\n", "end to end (first MAIL → last 250)", "messages", "msg/s", "intake/s", "seconds", "posts", "posts/s", "post lag")
	row := func(x result) {
		posts, rate, lag := "-", "-", "-"
		if x.hook {
			posts, rate, lag = fmt.Sprint(x.posts), fmt.Sprintf("%.0f", float64(x.posts)/x.toPost.Seconds()), benchkit.MS(x.lag)
		}
		fmt.Printf("%-36s %9d %9.0f %9.0f %8.2f %8s %9s %10s\n", x.name, x.n, x.rate(), float64(x.n)/x.intake.Seconds(), x.elapsed.Seconds(), posts, rate, lag)
	}
	for _, runs := range [][]result{without, with} {
		for _, x := range runs {
			row(x)
		}
		row(mean(runs))
	}
	fmt.Println("  posts: distinct events posted (queued + delivered per message); posts/s: over first MAIL → last post;")
	fmt.Println("  post lag: last 250 at the sink → last webhook post received (the mean row: the longer lag)")
	ratio := mean(with).rate() / mean(without).rate()
	verdict := "meets"
	if ratio < target {
		verdict = "MISSES"
	}
	fmt.Printf("\nwith webhooks / without, end to end, mean of 2 runs each: %.2f (%s the target: webhooks cost ≤ 20%% of end-to-end throughput, ratio ≥ %.2f)\n",
		ratio, verdict, target)
}

// mean merges runs into one result (totals over total time; the longest
// lag).
func mean(runs []result) result {
	m := result{name: fmt.Sprintf("%s, mean of %d", runs[0].name, len(runs)), hook: runs[0].hook}
	for _, x := range runs {
		m.n += x.n
		m.elapsed += x.elapsed
		m.intake += x.intake
		m.posts += x.posts
		m.toPost += x.toPost
		m.lag = max(m.lag, x.lag)
	}
	return m
}

type bench struct {
	r    *benchkit.Relay
	sink *benchkit.SmtpSink
	rc   *receiver
	c    *configs
	msg  []byte
}

// run switches the relay to the configuration (a reload when it
// changes), submits n messages and waits until the sink has answered 250
// to all of them and, with the webhook, until every queued and delivered
// event has been posted.
func (b *bench) run(name string, hook bool, n int) result {
	if hook != b.c.hook {
		b.c.write(hook)
		b.c.reload()
	}
	b.rc.reset()
	base := b.sink.Count()
	start, intake := b.submit(n)
	end, ok := b.sink.WaitFor(base+n, *timeout)
	if !ok {
		log.Fatalf("%s: only %d of %d messages reached the sink within %s", name, b.sink.Count()-base, n, *timeout)
	}
	res := result{name: name, hook: hook, n: n, elapsed: end.Sub(start), intake: intake}
	st := b.rc.state()
	if hook {
		if st = b.rc.waitFor(n, *timeout); st.types["queued"] < n || st.types["delivered"] < n {
			log.Fatalf("%s: within %s of the last delivery the receiver had %d queued and %d delivered events of %d messages",
				name, *timeout, st.types["queued"], st.types["delivered"], n)
		}
		res.posts, res.toPost, res.lag = st.unique, st.last.Sub(start), st.last.Sub(end)
	}
	if st.bad > 0 {
		log.Fatalf("%s: %d webhook posts without valid webhook-id/-timestamp/-signature headers or body (first: %s)", name, st.bad, st.badWhy)
	}
	if !hook && st.posts > 0 {
		log.Fatalf("%s: the receiver got %d posts with no webhook configured", name, st.posts)
	}
	line := fmt.Sprintf("  %s: %d delivered in %s = %.0f msg/s (intake done after %s)", name, n,
		res.elapsed.Round(time.Millisecond), res.rate(), intake.Round(time.Millisecond))
	if hook {
		line += fmt.Sprintf("; %d events posted (%v, %d resent), the last %s after the last 250",
			st.unique, st.types, st.posts-st.unique, benchkit.MS(res.lag))
	}
	fmt.Println(line)
	return res
}

// submit sends n messages over *sessions authenticated sessions, opened
// before the clock starts; it returns when the clock started and how long
// the relay took to accept all of them.
func (b *bench) submit(n int) (time.Time, time.Duration) {
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	var next atomic.Int64
	for range *sessions {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			c, err := smtp.DialStartTLS(b.r.SMTPAddr, b.r.TLSConfig())
			benchkit.Must(err)
			defer c.Quit()
			benchkit.Must(c.Auth(sasl.NewPlainClient("", benchkit.User, benchkit.Password)))
			ready.Done()
			<-gate
			for next.Add(1) <= int64(n) {
				benchkit.Must(c.SendMail("load@example.com", []string{rcpt}, bytes.NewReader(b.msg)))
			}
		}()
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	done.Wait()
	return start, time.Since(start)
}

// configs are the relay's two configurations: the file benchkit wrote,
// with events.allowedTargets allowing the loopback receiver, and the same
// with a webhook for every event type on the benchmark credential. Each
// write has a new revision, which the relay reports once applied.
type configs struct {
	r             *benchkit.Relay
	plain, hooked []byte
	hook          bool
	rev           int
}

func newConfigs(r *benchkit.Relay, url, secret string) *configs {
	base, err := os.ReadFile(r.CfgPath)
	benchkit.Must(err)
	base = append(base, "events: {allowedTargets: [127.0.0.1/32]}\n"...)
	// The credential is the last entry before the queue section.
	i := bytes.Index(base, []byte("}\nqueue: "))
	if i < 0 || !bytes.Contains(base[:i], []byte("username: "+benchkit.User)) {
		log.Fatalf("%s: no credential line before queue:", r.CfgPath)
	}
	with := bytes.Clone(base[:i])
	with = fmt.Appendf(with, ", webhook: {url: %q, secret: %q, types: [queued, delivered, deferred, bounced, suppressed, expired, dsn_sent]}", url, secret)
	with = append(with, base[i:]...)
	return &configs{r: r, plain: base, hooked: with}
}

// write replaces the config file at once (a rename, so the relay's file
// watcher never reads half of it).
func (c *configs) write(hook bool) {
	c.hook = hook
	c.rev++
	cfg := c.plain
	if hook {
		cfg = c.hooked
	}
	cfg = fmt.Appendf(bytes.Clone(cfg), "revision: %d\n", c.rev)
	tmp := c.r.CfgPath + ".new"
	benchkit.Must(os.WriteFile(tmp, cfg, 0o600))
	benchkit.Must(os.Rename(tmp, c.r.CfgPath))
}

// reload sends SIGHUP and waits until the relay reports the written
// revision, then a moment more for the file watcher's own reload of the
// same file to pass.
func (c *configs) reload() {
	benchkit.Must(syscall.Kill(c.r.PID(), syscall.SIGHUP))
	deadline := time.Now().Add(30 * time.Second)
	for int(c.r.Metric("mailroom_relay_config_revision")) != c.rev {
		if f := c.r.Metric(`mailroom_relay_config_reloads_total{result="failure"}`); f > 0 {
			log.Fatalf("relay refused the benchmark config; see %s/relay.log", c.r.Dir)
		}
		if time.Now().After(deadline) {
			log.Fatalf("relay did not apply config revision %d; see %s/relay.log", c.rev, c.r.Dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
}

// receiver is the webhook endpoint: it verifies each post's Standard
// Webhooks headers and signature, notes each distinct event (webhook-id)
// by type and when the last one arrived, and answers 204.
type receiver struct {
	wh *standardwebhooks.Webhook

	mu sync.Mutex
	st rstate
}

type rstate struct {
	ids    map[string]bool
	types  map[string]int // distinct events by type
	unique int            // distinct events
	posts  int            // all valid posts (resends included)
	bad    int
	badWhy string
	last   time.Time // when the last distinct event arrived
}

func newReceiver(secret string) *receiver {
	wh, err := standardwebhooks.NewWebhook(secret)
	benchkit.Must(err)
	rc := &receiver{wh: wh}
	rc.reset()
	return rc
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	id := req.Header.Get("webhook-id")
	var e struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	}
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case id == "" || req.Header.Get("webhook-signature") == "" || req.Header.Get("webhook-timestamp") == "":
		why = "missing webhook-id, webhook-timestamp or webhook-signature"
	case rc.wh.Verify(body, req.Header) != nil:
		why = "signature does not verify"
	case json.Unmarshal(body, &e) != nil || e.Type == "" || e.ID != id:
		why = "body is not an event with the webhook-id as id"
	}
	now := time.Now()
	rc.mu.Lock()
	if why != "" {
		if rc.st.bad++; rc.st.bad == 1 {
			rc.st.badWhy = why
		}
	} else {
		rc.st.posts++
		if !rc.st.ids[id] {
			rc.st.ids[id] = true
			rc.st.unique++
			rc.st.types[e.Type]++
			rc.st.last = now
		}
	}
	rc.mu.Unlock()
	if why != "" {
		http.Error(w, why, http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) reset() {
	rc.mu.Lock()
	rc.st = rstate{ids: map[string]bool{}, types: map[string]int{}}
	rc.mu.Unlock()
}

// state is a copy of what the receiver has seen since reset (ids left
// out).
func (rc *receiver) state() rstate {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s := rc.st
	s.ids = nil
	s.types = map[string]int{}
	for k, v := range rc.st.types {
		s.types[k] = v
	}
	return s
}

// waitFor returns once n queued and n delivered events have arrived, or
// after d.
func (rc *receiver) waitFor(n int, d time.Duration) rstate {
	deadline := time.Now().Add(d)
	for {
		s := rc.state()
		if s.types["queued"] >= n && s.types["delivered"] >= n || time.Now().After(deadline) {
			return s
		}
		time.Sleep(2 * time.Millisecond)
	}
}
