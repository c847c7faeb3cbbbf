package relaypool_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relayconfig"
)

// scaleSize is the design point of issue 9 (1,000 domains with RSA-2048
// keys, 5,000 credentials on one pool) with MAILROOM_SCALE=full, which
// `make test-scale` (part of make test) sets; plain go test runs a tenth of
// it, so the package's tests stay quick to iterate on.
func scaleSize() (domains, creds int) {
	if os.Getenv("MAILROOM_SCALE") == "full" {
		return 1000, 5000
	}
	return 100, 500
}

func rssKiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}

// parallel runs f(i) for i in [0, n) on a few workers.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func TestThousandDomainsFiveThousandCredentialsSettle(t *testing.T) {
	nd, nc := scaleSize()
	h := start(t, nil)
	key, err := rsa.GenerateKey(rand.Reader, 2048) // one key, many domains: size is what matters
	if err != nil {
		t.Fatal(err)
	}
	const pool, ns = "bulk", "bulk"
	const teams = 50
	h.create(namespace(ns, nil))
	for i := range teams {
		h.create(namespace(fmt.Sprintf("team-%02d", i), nil))
	}
	p := &v1alpha1.RelayPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pool}, Spec: v1alpha1.RelayPoolSpec{
		Hostname: "relay.bulk.example", AllowedNamespaces: v1alpha1.AllowedNamespaces{From: v1alpha1.NamespacesFromAll}}}
	h.create(p)
	t0 := time.Now()
	parallel(t, nd, func(i int) error {
		name := fmt.Sprintf("d%04d", i)
		domain := name + ".bulk.example"
		secret, _ := dkimSecret(t, ns, name, domain, "mr-20261201", key)
		sd := sendingDomain(ns, name, domain)
		sd.Spec.PoolRef = v1alpha1.PoolReference{Name: pool}
		if err := h.c.Create(h.ctx, secret); err != nil {
			return err
		}
		return h.c.Create(h.ctx, sd)
	})
	parallel(t, nc, func(i int) error {
		c := credential(fmt.Sprintf("team-%02d", i%teams), fmt.Sprintf("app%05d", i), fmt.Sprintf("d%04d.bulk.example", i%nd))
		c.Spec.PoolRef = v1alpha1.PoolReference{Name: pool, Namespace: ns}
		return h.c.Create(h.ctx, c)
	})
	created := time.Since(t0)

	deadline := time.Now().Add(10 * time.Minute)
	for {
		if err := h.get(ns, pool, p); err != nil {
			t.Fatal(err)
		}
		if int(p.Status.Domains) == nd && int(p.Status.Credentials) == nc {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10m the pool renders %d domains and %d credentials", p.Status.Domains, p.Status.Credentials)
		}
		time.Sleep(500 * time.Millisecond)
	}
	rendered := time.Since(t0)
	// Settled: every credential has a status that says why it is not Ready
	// (no relay pods in envtest), none is still pending configuration.
	for {
		var list v1alpha1.SMTPCredentialList
		if err := h.c.List(h.ctx, &list); err != nil {
			t.Fatal(err)
		}
		waiting := 0
		for _, c := range list.Items {
			if c.Spec.PoolRef.Name != pool {
				continue
			}
			r := meta.FindStatusCondition(c.Status.Conditions, "Ready")
			if r == nil || r.Reason != "NoReadyRelays" {
				waiting++
			}
		}
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d credentials have not settled", waiting)
		}
		time.Sleep(500 * time.Millisecond)
	}
	settled := time.Since(t0)

	snapshot := func() map[string][]byte {
		var list corev1.SecretList
		if err := h.c.List(h.ctx, &list, client.InNamespace(ns), client.MatchingLabels{"mailroom.io/pool": pool}); err != nil {
			t.Fatal(err)
		}
		out := map[string][]byte{}
		for _, s := range list.Items {
			for k, v := range s.Data {
				out[s.Name+"/"+k] = v
			}
		}
		return out
	}
	// Settled means quiet: no write for five seconds (requeued reconciles
	// of thousands of objects drain slowly on a loaded machine).
	quiet, loud := time.Now(), time.Now()
	h.writes.Reset()
	for last := -1; time.Since(quiet) < 5*time.Second; time.Sleep(250 * time.Millisecond) {
		if n := h.writes.Total(); n != last {
			last, quiet = n, time.Now()
		}
		if time.Since(loud) > 2*time.Minute {
			t.Fatalf("writes did not stop for two minutes after everything settled:\n%s", h.writes)
		}
	}
	quietAt := time.Since(t0)
	before := snapshot()
	h.writes.Reset()
	var resync time.Duration
	for range 3 {
		r0 := time.Now()
		if _, err := h.pool.Reconcile(h.ctx, ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: pool}}); err != nil {
			t.Fatal(err)
		}
		resync = time.Since(r0)
	}
	if n := h.writes.Total(); n != 0 {
		t.Errorf("three resyncs of %d domains and %d credentials wrote %d times:\n%s", nd, nc, n, h.writes)
	}
	if after := snapshot(); !maps.EqualFunc(before, after, bytes.Equal) {
		t.Errorf("the rendered configuration changed without a change in the world")
	}
	size := 0
	for k, v := range before {
		if strings.Contains(k, "-relay-config") {
			size += len(v)
		}
	}
	t.Logf("%d domains + %d credentials: created in %s, all rendered after %s, every credential settled after %s, no more writes after %s; one pool resync %s; config %d KiB over %d Secrets; test process RSS (API objects of the test included) %d MiB",
		nd, nc, created.Round(time.Second), rendered.Round(time.Second), settled.Round(time.Second), quietAt.Round(time.Second), resync.Round(time.Millisecond), size>>10, relayconfig.NumShards+1, rssKiB()>>10)
}
