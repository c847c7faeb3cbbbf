package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	externaldnsv1alpha1 "sigs.k8s.io/external-dns/apis/v1alpha1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/envtest"
)

// TestSendingDomainScale runs the manager binary (so its memory is its
// own) with 500 SendingDomains on the loopback stack: envtest's API
// server, external-dns publishing to BIND over RFC 2136, the domains'
// records checked at BIND with the default 10m verify interval. It runs on
// demand:
//
//	MAILROOM_SCALE=1                          run it
//	MAILROOM_SCALE_DOMAINS=500                how many domains
//	MAILROOM_MANAGER_BIN=path                 the manager (default: build this tree's)
//
// "Ready" here is DNSVerified: no relay pod runs in this measurement, so
// the Signing check (the relays load the key) never passes and Ready stays
// False with NoReadyRelays, truthfully; the pool e2e and the real-node
// suite cover Signing.
//
// It reports time until all are verified, how long that trailed the records
// becoming resolvable, the writes of an idle world across a manager
// restart (every domain reconciled and checked again: must be 0), the
// manager's RSS, and its ERROR log lines (must be 0).
func TestSendingDomainScale(t *testing.T) {
	if os.Getenv("MAILROOM_SCALE") == "" {
		t.Skip("a measurement; set MAILROOM_SCALE=1")
	}
	n := 500
	if s := os.Getenv("MAILROOM_SCALE_DOMAINS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("MAILROOM_SCALE_DOMAINS: %v", err)
		}
	}
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	root, err := envtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := managerBinary(t, root)
	bind := bindtest.Start(t, "example.test")
	startExternalDNS(t, root, env.Config, bind, 5*time.Second)
	c := env.Client
	ctx := context.Background()

	const ns = "mail"
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	mustCreate(t, c, &v1alpha1.RelayPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "transactional"},
		Spec:       v1alpha1.RelayPoolSpec{Hostname: "relay.example.test", SendingIPs: []string{"192.0.2.25"}},
	})
	metrics := freeLoopbackAddr(t)
	mgr := startManager(t, bin, env.Config, "--metrics-bind-address="+metrics)

	start := time.Now()
	names := make([]string, n)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sd := &v1alpha1.SendingDomain{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: names[i]},
					Spec: v1alpha1.SendingDomainSpec{
						Domain:  names[i] + ".example.test",
						PoolRef: v1alpha1.PoolReference{Name: "transactional"},
						// RSA-2048 (the default), the default 10m interval.
						DNS: v1alpha1.DNSSpec{Verify: v1alpha1.DNSVerifySpec{Resolvers: []string{bind.Addr}}},
					},
				}
				if err := c.Create(ctx, sd); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	for i := range n {
		names[i] = fmt.Sprintf("d%04d", i)
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("created %d SendingDomains in %v", n, time.Since(start).Round(time.Millisecond))

	// Watch the zone (AXFR twice a second) for when each domain's records
	// first resolve, and the domains for when each turns Ready (the
	// condition's lastTransitionTime, by the operator's clock, in whole
	// seconds).
	var mu sync.Mutex
	resolvable := map[string]time.Time{}
	stopZone := make(chan struct{})
	zoneDone := make(chan struct{})
	go func() {
		defer close(zoneDone)
		for {
			select {
			case <-stopZone:
				return
			case <-time.After(500 * time.Millisecond):
			}
			txt, err := zoneTXT(bind)
			if err != nil {
				continue
			}
			now := time.Now()
			mu.Lock()
			for _, name := range names {
				if _, ok := resolvable[name]; !ok && domainResolves(txt, name+"."+bind.Zone) {
					resolvable[name] = now
				}
			}
			mu.Unlock()
		}
	}()
	ready := map[string]time.Time{}
	deadline := start.Add(15 * time.Minute)
	for len(ready) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d domains Ready after 15m; manager log:\n%s", len(ready), n, tail(mgr.log.String(), 40))
		}
		var list v1alpha1.SendingDomainList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, sd := range list.Items {
			if c := meta.FindStatusCondition(sd.Status.Conditions, v1alpha1.SendingDomainDNSVerified); c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == sd.Generation {
				ready[sd.Name] = c.LastTransitionTime.Time
			}
		}
		time.Sleep(time.Second)
	}
	allReady := time.Since(start)
	time.Sleep(time.Second) // the zone watcher's last look
	close(stopZone)
	<-zoneDone
	var lags []time.Duration
	var last time.Time
	for name, at := range ready {
		last = latest(last, at)
		if r, ok := resolvable[name]; ok {
			// lastTransitionTime is truncated to the second.
			lags = append(lags, max(0, at.Add(time.Second).Sub(r)))
		}
	}
	if len(lags) < n {
		t.Errorf("only %d of %d domains were seen resolvable in the zone", len(lags), n)
	}
	slices.Sort(lags)
	var deciles []string
	for p := 10; p <= 100; p += 10 {
		deciles = append(deciles, fmt.Sprintf("p%d=%.1fs", p, pct(lags, p).Seconds()))
	}
	t.Logf("Ready after the records resolved: %s", strings.Join(deciles, " "))
	t.Logf("the last domain turned Ready %.1fs after the first create", last.Sub(start).Seconds())
	rss := settledRSS(t, mgr, 10*time.Second)
	// How long reconcile requests waited in the work queue: the part of
	// the lag that is the manager's backlog (key generation, mostly).
	metricsURL := "http://" + metrics + "/metrics"
	const q = `name="sendingdomain"`
	queueWait := metricSum(t, metricsURL, "workqueue_queue_duration_seconds_sum", q) / max(1, metricSum(t, metricsURL, "workqueue_queue_duration_seconds_count", q))
	reconciles := metricSum(t, metricsURL, "controller_runtime_reconcile_total", `controller="sendingdomain"`)
	busy := metricSum(t, metricsURL, "controller_runtime_reconcile_time_seconds_sum", `controller="sendingdomain"`)
	t.Logf("sendingdomain: %.0f reconciles, %.0fs in reconciles, mean queue wait %.2fs", reconciles, busy, queueWait)

	// An idle world, reconciled again from scratch: restart the manager
	// (every domain is reconciled and its records checked once more) and
	// compare resourceVersions of everything the SendingDomain controller
	// writes.
	before := sendingDomainVersions(t, c, ns)
	logBefore := mgr.log.String()
	mgr.end()
	mgr = startManager(t, bin, env.Config)
	settleUntil := time.Now().Add(60 * time.Second)
	for time.Now().Before(settleUntil) {
		time.Sleep(time.Second)
	}
	after := sendingDomainVersions(t, c, ns)
	var idleWrites []string
	for k, v := range after {
		if before[k] != v {
			idleWrites = append(idleWrites, k)
		}
	}
	slices.Sort(idleWrites)
	errs := append(errorLines(logBefore), errorLines(mgr.log.String())...)
	// The log was there to look at (JSON lines, "level":"INFO" and up).
	t.Logf("manager log: %d lines", strings.Count(logBefore+mgr.log.String(), "\n"))

	summary := fmt.Sprintf("SCALE domains=%d all_ready=%.1fs ready_lag_p50=%.1fs ready_lag_p95=%.1fs ready_lag_max=%.1fs queue_wait_mean=%.2fs idle_writes=%d manager_rss_mib=%.1f error_lines=%d",
		n, allReady.Seconds(), pct(lags, 50).Seconds(), pct(lags, 95).Seconds(), pct(lags, 100).Seconds(), queueWait, len(idleWrites), rss, len(errs))
	fmt.Println(summary)
	t.Log(summary)
	if len(idleWrites) > 0 {
		t.Errorf("an idle world was written across a manager restart: %d objects, e.g. %v", len(idleWrites), idleWrites[:min(10, len(idleWrites))])
	}
	if len(errs) > 0 {
		t.Errorf("%d ERROR log lines, e.g.:\n%s", len(errs), strings.Join(errs[:min(5, len(errs))], "\n"))
	}
}

// zoneTXT transfers the zone (AXFR, TSIG-signed as external-dns does) and
// returns its TXT records by owner name, each joined into one string.
func zoneTXT(bind *bindtest.Server) (map[string][]string, error) {
	m := new(dns.Msg)
	m.SetAxfr(bind.Zone)
	m.SetTsig(bind.TSIGKeyName, dns.Fqdn(bind.TSIGAlgorithm), 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{bind.TSIGKeyName: bind.TSIGSecret}}
	ch, err := tr.In(m, bind.Addr)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for env := range ch {
		if env.Error != nil {
			return nil, env.Error
		}
		for _, rr := range env.RR {
			if txt, ok := rr.(*dns.TXT); ok {
				name := strings.ToLower(txt.Hdr.Name)
				out[name] = append(out[name], strings.Join(txt.Txt, ""))
			}
		}
	}
	return out, nil
}

// domainResolves: the zone holds the domain's DKIM, SPF and DMARC records
// (fqdn ends in a dot).
func domainResolves(txt map[string][]string, fqdn string) bool {
	has := func(name, prefix string) bool {
		return slices.ContainsFunc(txt[name], func(v string) bool { return strings.HasPrefix(v, prefix) })
	}
	if !has(fqdn, "v=spf1") || !has("_dmarc."+fqdn, "v=DMARC1") {
		return false
	}
	for name, values := range txt {
		if strings.HasSuffix(name, "._domainkey."+fqdn) && slices.ContainsFunc(values, func(v string) bool { return strings.HasPrefix(v, "v=DKIM1") }) {
			return true
		}
	}
	return false
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// sendingDomainVersions maps every SendingDomain, DNSEndpoint and DKIM
// Secret in ns to its resourceVersion.
func sendingDomainVersions(t *testing.T, c client.Client, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var sds v1alpha1.SendingDomainList
	var eps externaldnsv1alpha1.DNSEndpointList
	var secrets corev1.SecretList
	for _, l := range []client.ObjectList{&sds, &eps, &secrets} {
		if err := c.List(context.Background(), l, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range sds.Items {
		out["SendingDomain/"+o.Name] = o.ResourceVersion
	}
	for _, o := range eps.Items {
		out["DNSEndpoint/"+o.Name] = o.ResourceVersion
	}
	for _, o := range secrets.Items {
		if o.Type == "mailroom.io/dkim" {
			out["Secret/"+o.Name] = o.ResourceVersion
		}
	}
	return out
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100]
}
