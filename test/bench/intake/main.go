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
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"mailroom.io/mailroom/internal/dkim"
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
	smtpSourceRun(r.smtpAddr, warmup, relayName+" warm-up")
	var pf *postfix
	postfixName := "postfix 3.x, mynetworks, no signing (smtp-source)"
	if !*skipPostfix {
		pf = newPostfix(filepath.Join(dir, "postfix"))
		pf.start()
		smtpSourceRun(pf.addr, warmup, postfixName+" warm-up")
	}
	var relayRuns, postfixRuns []result
	relayRuns = append(relayRuns, runSmtpSource(relayName, r.smtpAddr))
	if pf != nil {
		postfixRuns = append(postfixRuns, runSmtpSource(postfixName, pf.addr), runSmtpSource(postfixName, pf.addr))
	}
	relayRuns = append(relayRuns, runSmtpSource(relayName, r.smtpAddr))
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
		smtpSourceRun(r.smtpAddr, warmup, name+" warm-up")
		res := runSmtpSource(name, r.smtpAddr)
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

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

const warmup = 500

// smtpSourceRun sends n messages to addr with smtp-source and times it.
func smtpSourceRun(addr string, n int, name string) time.Duration {
	cmd := exec.Command(*smtpSource, "-d", "-s", strconv.Itoa(*sessions), "-m", strconv.Itoa(n),
		"-l", strconv.Itoa(*size), "-f", "load@example.com", "-t", "sink@example.net", addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		log.Fatalf("%s: smtp-source: %v\n%s", name, err, out.String())
	}
	if out.Len() > 0 {
		// smtp-source only prints on trouble (a refused message).
		log.Fatalf("%s: smtp-source reported:\n%s", name, out.String())
	}
	return time.Since(start)
}

// runSmtpSource is one measured smtp-source run.
func runSmtpSource(name, addr string) result {
	elapsed := smtpSourceRun(addr, *messages, name)
	fmt.Printf("  %s: %d in %s = %.0f msg/s\n", name, *messages, elapsed.Round(time.Millisecond), float64(*messages)/elapsed.Seconds())
	return result{name: name, n: *messages, elapsed: elapsed}
}

// relay is the relay binary running with a benchmark config.
type relay struct {
	dir, cfgPath, smtpAddr, tlsAddr, httpAddr string
	pool                                      *x509.CertPool
	cmd                                       *exec.Cmd
	log                                       bytes.Buffer
}

const benchUser, benchPass = "bench.user", "bench-password"

func newRelay(dir, alg string) *relay {
	must(os.MkdirAll(dir, 0o700))
	key, err := dkim.Generate(dkim.Algorithm(alg), rand.Reader)
	must(err)
	pemKey, err := dkim.MarshalPrivateKey(key)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "dkim.pem"), pemKey, 0o600))
	certPEM, keyPEM := selfSigned()
	must(os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600))
	must(os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600))
	hash, err := bcrypt.GenerateFromPassword([]byte(benchPass), bcrypt.DefaultCost)
	must(err)
	r := &relay{dir: dir, smtpAddr: freeAddr(), tlsAddr: freeAddr(), httpAddr: freeAddr(), pool: x509.NewCertPool()}
	r.pool.AppendCertsFromPEM(certPEM)
	cfg := fmt.Sprintf(`hostname: relay.bench.test
listeners: {submission: %q, submissions: %q, http: %q}
tls: {certFile: %[4]s/tls.crt, keyFile: %[4]s/tls.key}
limits: {maxConnectionsPerIP: 1000}
trustedNetworks:
  - {name: bench, cidrs: [127.0.0.1/32], allowedSenders: [example.com]}
domains:
  - {name: example.com, keys: [{selector: bench, algorithm: %[5]s, privateKeyFile: %[4]s/dkim.pem}]}
credentials:
  - {username: %[6]s, passwordHash: %[7]q, allowedSenders: [example.com]}
queue: {directory: %[4]s/queue}
delivery: {paused: true}
`, r.smtpAddr, r.tlsAddr, r.httpAddr, dir, alg, benchUser, string(hash))
	r.cfgPath = filepath.Join(dir, "relay.yaml")
	must(os.WriteFile(r.cfgPath, []byte(cfg), 0o600))
	return r
}

func (r *relay) start() {
	r.cmd = exec.Command(*relayBin, "--config", r.cfgPath, "--log-format", "text")
	// Per-message log lines go to a file, as in a pod they go to a pipe.
	f, err := os.Create(filepath.Join(r.dir, "relay.log"))
	must(err)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	must(r.cmd.Start())
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get("http://" + r.httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			log.Fatalf("relay not ready; see %s/relay.log", r.dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *relay) metric(name string) float64 {
	resp, err := http.Get("http://" + r.httpAddr + "/metrics")
	must(err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// checkAccepted makes sure the relay really queued what smtp-source sent.
func (r *relay) checkAccepted(want int) {
	if got := int(r.metric("mailroom_queue_depth")); got < want {
		log.Fatalf("relay queued %d messages, want %d", got, want)
	}
	sum, count := r.metric("mailroom_queue_commit_batch_records_sum"), r.metric("mailroom_queue_commit_batch_records_count")
	fmt.Printf("    group commit: %.0f records in %.0f fsyncs (%.1f per fsync)\n", sum, count, sum/count)
}

func (r *relay) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			log.Fatalf("relay exit: %v; see %s/relay.log", err, r.dir)
		}
	case <-time.After(60 * time.Second):
		r.cmd.Process.Kill()
		log.Fatal("relay did not stop")
	}
}

// runGoClient loads the relay over STARTTLS + AUTH PLAIN, one long session
// per worker, and times each transaction from MAIL to the 250 after DATA.
func runGoClient(name string, r *relay) result {
	body := benchMessage(*size)
	tlsCfg := &tls.Config{RootCAs: r.pool, ServerName: "relay.bench.test"}
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
				c, err := smtp.DialStartTLS(r.smtpAddr, tlsCfg)
				must(err)
				defer c.Close()
				must(c.Auth(sasl.NewPlainClient("", benchUser, benchPass)))
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
	var b bytes.Buffer
	b.WriteString("From: Load <load@example.com>\r\nTo: <sink@example.net>\r\nSubject: benchmark\r\n" +
		"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@load.test>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d%s\r\n", i, strings.Repeat("X", 77))
	}
	return b.Bytes()
}

// postfix is a throwaway Postfix instance: its own config, queue and log in
// a temp dir, smtpd on a loopback port, nothing delivered.
type postfix struct {
	dir, addr string
}

func newPostfix(dir string) *postfix {
	p := &postfix{dir: dir, addr: freeAddr()}
	for _, d := range []string{"etc", "spool", "data"} {
		must(os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	must(os.Chmod(dir, 0o755))
	// The master's lock and data files belong to the mail owner.
	out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput()
	if err != nil {
		log.Fatalf("chown postfix (the benchmark must run as root): %v %s", err, out)
	}
	mainCf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# Accept and queue, never deliver.
defer_transports = smtp
maillog_file = %[1]s/maillog
biff = no
`, dir)
	// Debian's services, without chroot (the temp queue has no chroot
	// files), smtpd on the benchmark port.
	masterCf := p.addr + ` inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
	must(os.WriteFile(filepath.Join(dir, "etc", "main.cf"), []byte(mainCf), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc", "master.cf"), []byte(masterCf), 0o644))
	return p
}

func (p *postfix) start() {
	out, err := exec.Command(*postfixBin, "-c", filepath.Join(p.dir, "etc"), "start").CombinedOutput()
	if err != nil {
		log.Fatalf("postfix start: %v\n%s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("postfix smtpd not listening on %s; see %s/maillog", p.addr, p.dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *postfix) stop() {
	out, err := exec.Command(*postfixBin, "-c", filepath.Join(p.dir, "etc"), "stop").CombinedOutput()
	if err != nil {
		log.Printf("postfix stop: %v\n%s", err, out)
	}
	// The master exits asynchronously; wait until the port is free.
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

// checkQueued counts queue files, so Postfix is known to have queued (not
// dropped) the load.
func (p *postfix) checkQueued(want int) {
	n := 0
	for _, q := range []string{"incoming", "active", "deferred", "hold", "maildrop"} {
		filepath.Walk(filepath.Join(p.dir, "spool", q), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n++
			}
			return nil
		})
	}
	if n < want {
		log.Fatalf("postfix queued %d messages, want %d", n, want)
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer l.Close()
	return l.Addr().String()
}

func selfSigned() (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "relay.bench.test"},
		DNSNames:     []string{"relay.bench.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	must(err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
