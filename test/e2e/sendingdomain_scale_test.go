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
// It reports time until all are Ready, how long Ready trailed the records
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
	mgr := startManager(t, bin, env.Config)

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

	// Poll until all are Ready, noting when each domain's records first
	// resolve at BIND and when it is first seen Ready.
	resolvable := map[string]time.Time{}
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
			if _, ok := ready[sd.Name]; ok {
				continue
			}
			now := time.Now()
			if _, ok := resolvable[sd.Name]; !ok && sd.Status.DKIM.ActiveSelector != "" && recordsResolve(t, bind, sd.Name, sd.Status.DKIM.ActiveSelector) {
				resolvable[sd.Name] = now
			}
			if c := meta.FindStatusCondition(sd.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == sd.Generation {
				ready[sd.Name] = now
				if _, ok := resolvable[sd.Name]; !ok {
					resolvable[sd.Name] = now
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	allReady := time.Since(start)
	var lags []time.Duration
	for name, at := range ready {
		lags = append(lags, at.Sub(resolvable[name]))
	}
	slices.Sort(lags)
	rss := settledRSS(t, mgr, 10*time.Second)

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

	summary := fmt.Sprintf("SCALE domains=%d all_ready=%.1fs ready_lag_p50=%.1fs ready_lag_p95=%.1fs ready_lag_max=%.1fs idle_writes=%d manager_rss_mib=%.1f error_lines=%d",
		n, allReady.Seconds(), pct(lags, 50).Seconds(), pct(lags, 95).Seconds(), lags[len(lags)-1].Seconds(), len(idleWrites), rss, len(errs))
	fmt.Println(summary)
	t.Log(summary)
	if len(idleWrites) > 0 {
		t.Errorf("an idle world was written across a manager restart: %d objects, e.g. %v", len(idleWrites), idleWrites[:min(10, len(idleWrites))])
	}
	if len(errs) > 0 {
		t.Errorf("%d ERROR log lines, e.g.:\n%s", len(errs), strings.Join(errs[:min(5, len(errs))], "\n"))
	}
}

// recordsResolve: BIND serves the domain's DKIM, SPF and DMARC records.
func recordsResolve(t *testing.T, bind *bindtest.Server, name, selector string) bool {
	t.Helper()
	if len(bind.LookupTXT(t, selector+"._domainkey."+name)) == 0 || len(bind.LookupTXT(t, "_dmarc."+name)) == 0 {
		return false
	}
	return slices.ContainsFunc(bind.LookupTXT(t, name), func(s []string) bool { return strings.HasPrefix(strings.Join(s, ""), "v=spf1") })
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
