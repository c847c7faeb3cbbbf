package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"mailroom.io/mailroom/internal/testutil/envtest"
)

// TestManagerRSSWithUnrelatedSecrets measures the manager's memory with
// many Secrets in the cluster that are none of its business: it caches only
// the Secrets it writes, so they must not cost it memory. It runs on
// demand (MAILROOM_MEASURE_RSS=1); hack/measure-manager-rss.sh runs it for
// this tree and for an older commit and prints both figures.
//
//	MAILROOM_MEASURE_RSS=1          run it
//	MAILROOM_RSS_SECRETS=5000       how many 4 KiB Secrets (default 5000)
//	MAILROOM_MANAGER_BIN=path       the manager to measure (default: build this tree's)
func TestManagerRSSWithUnrelatedSecrets(t *testing.T) {
	if os.Getenv("MAILROOM_MEASURE_RSS") == "" {
		t.Skip("a measurement; set MAILROOM_MEASURE_RSS=1 (or run hack/measure-manager-rss.sh)")
	}
	count := 5000
	if s := os.Getenv("MAILROOM_RSS_SECRETS"); s != "" {
		var err error
		if count, err = strconv.Atoi(s); err != nil {
			t.Fatalf("MAILROOM_RSS_SECRETS: %v", err)
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

	const ns = "unrelated"
	mustCreate(t, env.Client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	start := time.Now()
	createSecrets(t, env, ns, count, 4096)
	t.Logf("created %d Secrets of 4 KiB in %v", count, time.Since(start).Round(time.Second))

	p := startManager(t, bin, env.Config)
	rss := settledRSS(t, p, 20*time.Second)
	// One line others can grep from the output.
	fmt.Printf("MANAGER_RSS_MIB=%.1f secrets=%d bin=%s\n", rss, count, bin)
	t.Logf("manager RSS with %d unrelated 4 KiB Secrets: %.1f MiB", count, rss)
}

// createSecrets creates count Opaque Secrets of size random bytes each,
// eight at a time.
func createSecrets(t *testing.T, env *envtest.Env, ns string, count, size int) {
	t.Helper()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				data := make([]byte, size)
				_, _ = rand.Read(data)
				s := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("unrelated-%05d", i)},
					Data:       map[string][]byte{"blob": data},
				}
				if err := env.Client.Create(context.Background(), s); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range count {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}
