// Command api benchmarks the relay's HTTP send API intake beside its SMTP
// intake, in the same run against the same relay process: ≈5 KB
// messages from 20 concurrent clients, fsync on, DKIM signing, both
// authenticated over TLS (HTTPS with HTTP Basic and keep-alive; STARTTLS
// with AUTH PLAIN, one session per client). It runs rounds of one SMTP
// and one API run back to back, in alternating order, so drifting load
// from other processes affects both alike. It prints each rate with
// p50/p99 latency and CPU per message, each round's API/SMTP ratio and
// their median. Everything listens on 127.0.0.1; hack/bench-intake.sh builds
// and runs it.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
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
	relayBin = flag.String("relay", "bin/relay", "relay binary")
	messages = flag.Int("messages", 5000, "messages per measured run")
	rounds   = flag.Int("rounds", 6, "rounds of one SMTP and one API run")
	clients  = flag.Int("clients", 20, "concurrent clients")
	size     = flag.Int("size", 5120, "message text size in bytes")
	alg      = flag.String("dkim", "Ed25519", "DKIM key algorithm")
	workDir  = flag.String("dir", "", "work directory (default: a new one under /var/tmp, removed afterwards)")
)

const warmup = 500

// theRelay is the relay under load, whose CPU time load reads.
var theRelay *benchkit.Relay

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, cleanup := benchkit.WorkDir(*workDir, "mailroom-bench-api-")
	defer cleanup()
	r := benchkit.NewRelay(*relayBin, filepath.Join(dir, "relay"), *alg, "{paused: true}")
	apiAddr := benchkit.FreeAddr()
	cfg, err := os.ReadFile(r.CfgPath)
	benchkit.Must(err)
	cfg = bytes.Replace(cfg, []byte("listeners: {"), []byte(fmt.Sprintf("listeners: {api: %q, ", apiAddr)), 1)
	benchkit.Must(os.WriteFile(r.CfgPath, cfg, 0o600))
	r.Start()
	defer r.Stop()
	theRelay = r
	fmt.Printf("API intake benchmark: %d messages of ~%d bytes, %d concurrent clients, DKIM %s, fsync on\n",
		*messages, *size, *clients, *alg)

	text := strings.Repeat(strings.Repeat("X", 77)+"\n", *size/78)
	smtpMsg := benchkit.BenchMessage(*size, "sink@example.net", "bench@load.test")
	body, err := json.Marshal(map[string]any{"from": "load@example.com", "to": []string{"sink@example.net"},
		"subject": "bench", "text": text})
	benchkit.Must(err)

	smtpRun := func(n int) result {
		return load("SMTP, STARTTLS + AUTH PLAIN (Go client)", n, func() (func() error, func()) {
			c, err := smtp.DialStartTLS(r.SMTPAddr, r.TLSConfig())
			benchkit.Must(err)
			benchkit.Must(c.Auth(sasl.NewPlainClient("", benchkit.User, benchkit.Password)))
			return func() error {
				return c.SendMail("load@example.com", []string{"sink@example.net"}, bytes.NewReader(smtpMsg))
			}, func() { c.Quit() }
		})
	}
	tr := &http.Transport{TLSClientConfig: r.TLSConfig(), MaxIdleConnsPerHost: *clients}
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	apiRun := func(n int) result {
		return load("HTTP API, HTTPS + Basic, JSON (Go client)", n, func() (func() error, func()) {
			return func() error {
				req, _ := http.NewRequest("POST", "https://"+apiAddr+"/v1/messages", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.SetBasicAuth(benchkit.User, benchkit.Password)
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusAccepted {
					return fmt.Errorf("%d %s", resp.StatusCode, b)
				}
				return nil
			}, func() {}
		})
	}
	smtpRun(warmup)
	apiRun(warmup)
	// Rounds of one SMTP and one API run back to back, in alternating
	// order; each round's ratio compares runs seconds apart, and the
	// median of the rounds is the figure (a compaction or a noisy
	// neighbour lands in one round, not in the result).
	var ratios []float64
	var smtpSum, apiSum float64
	for i := range *rounds {
		var s, a result
		if i%2 == 0 {
			s, a = smtpRun(*messages), apiRun(*messages)
		} else {
			a, s = apiRun(*messages), smtpRun(*messages)
		}
		smtpSum, apiSum = smtpSum+s.rate(), apiSum+a.rate()
		ratios = append(ratios, a.rate()/s.rate())
		fmt.Printf("  round %d: API/SMTP %.2f×\n", i+1, a.rate()/s.rate())
	}
	if got, want := int(r.Metric("mailroom_queue_depth")), 2*warmup+2**rounds**messages; got < want {
		log.Fatalf("relay queued %d messages, want %d", got, want)
	}
	slices.Sort(ratios)
	median := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		median = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	}
	fmt.Printf("SMTP intake: %.0f msg/s (mean of %d runs)\nHTTP API intake: %.0f msg/s (mean of %d runs)\nHTTP API / SMTP: %.2f× (median of %d rounds; %.2f-%.2f)\n",
		smtpSum/float64(*rounds), *rounds, apiSum/float64(*rounds), *rounds, median, *rounds, ratios[0], ratios[len(ratios)-1])
}

type result struct {
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
	// CPU per message: the relay's, and this process's (the clients').
	relayCPU, clientCPU time.Duration
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// load runs n operations over *clients workers; dial gives each worker
// its operation and its cleanup.
func load(name string, n int, dial func() (op func() error, done func())) result {
	relay0, self0 := theRelay.CPU(), benchkit.SelfCPU()
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, done := dial()
			defer done()
			var mine []time.Duration
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				benchkit.Must(op())
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := result{n: n, elapsed: time.Since(start),
		relayCPU:  (theRelay.CPU() - relay0) / time.Duration(n),
		clientCPU: (benchkit.SelfCPU() - self0) / time.Duration(n)}
	slices.Sort(lat)
	res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	if n != warmup {
		fmt.Printf("  %s: %d in %s = %.0f msg/s, p50 %s, p99 %s; CPU per message: relay %d µs, clients %d µs\n", name, n, res.elapsed.Round(time.Millisecond),
			res.rate(), benchkit.MS(res.p50), benchkit.MS(res.p99), res.relayCPU.Microseconds(), res.clientCPU.Microseconds())
	}
	return res
}
