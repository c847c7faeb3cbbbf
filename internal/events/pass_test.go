package events

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
)

// queuedN makes n queued events of m at t0.
func queuedN(n int) func(m *queue.Message) []Event {
	return func(m *queue.Message) []Event {
		evs := make([]Event, n)
		for i := range evs {
			evs[i] = ForMessage(Queued, m, t0)
			evs[i].Recipient = fmt.Sprintf("r%d@example.net", i)
		}
		return evs
	}
}

// A pass reads pending events in pages and starts posts while others
// finish: an event whose post finished (and was forgotten) after the page
// was read must not be posted again from that stale page. The benchmark
// (test/bench/webhook) saw 2-3% of events posted twice to a receiver that
// answered 204 to every one.
func TestABurstOfEventsIsPostedOnceEach(t *testing.T) {
	rcv := newReceiver(t, always(204))
	f := newFixture(t, hookConfig(rcv.URL, newSecret(t), []string{"127.0.0.1/32"}, time.Hour), Options{})
	const n = 600
	f.submit(t, "shop.shop", queuedN(n))
	f.d.Start()
	eventually(t, "every event posted and forgotten", func() bool { return len(f.pending(t)) == 0 })
	ids := map[string]int{}
	for _, d := range rcv.deliveries() {
		ids[d.Header.Get("webhook-id")]++
	}
	dups := 0
	for _, c := range ids {
		dups += c - 1
	}
	if len(ids) != n || dups != 0 {
		t.Fatalf("%d distinct events posted (want %d), %d posted more than once", len(ids), n, dups)
	}
}

// While every webhook target has PerTarget posts in progress, a pass
// stops at the first event it could not start: nothing can start until
// one finishes (and wakes the loop). It used to read and decode every
// pending event on each wake, so each finishing post cost the whole
// backlog (a third of the relay's CPU in test/bench/webhook).
func TestAPassWithEveryTargetBusyStopsAtTheFirstEvent(t *testing.T) {
	// Posts answer only once released, so none finishes during a pass.
	release := make(chan struct{})
	rcv := newReceiver(t, func(int) int { <-release; return 204 })
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	secret := newSecret(t)
	cfg := hookConfig(rcv.URL, secret, []string{"127.0.0.1/32"}, time.Hour)
	cfg.Credentials = append(cfg.Credentials, config.Credential{Username: "gone.shop", Webhook: &config.Webhook{URL: rcv.URL, Secret: secret}})
	f := newFixture(t, cfg, Options{})
	f.submit(t, "shop.shop", queuedN(300))
	f.clk.Step(time.Second)
	// An event whose credential then loses its webhook: a pass that reads
	// it drops it.
	f.submit(t, "gone.shop", func(m *queue.Message) []Event { return []Event{ForMessage(Queued, m, f.clk.Now())} })
	cfg.Credentials = cfg.Credentials[:2]
	if err := f.d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(rcv.URL)
	f.d.mu.Lock()
	f.d.busy[u.Host] = f.d.opts.PerTarget
	f.d.mu.Unlock()
	f.d.pass()
	if got := len(f.pending(t)); got != 301 {
		t.Fatalf("%d events pending after a pass with the only target busy, want all 301 (none read past the first)", got)
	}
	if got := len(rcv.deliveries()); got != 0 {
		t.Fatalf("%d posts started beyond the per-target limit", got)
	}

	f.d.mu.Lock()
	delete(f.d.busy, u.Host)
	f.d.mu.Unlock()
	f.d.pass()
	f.d.mu.Lock()
	started := len(f.d.inflight)
	f.d.mu.Unlock()
	once.Do(func() { close(release) })
	f.d.sends.Wait()
	if started != f.d.opts.PerTarget {
		t.Fatalf("%d posts started by a pass with the target free, want PerTarget (%d)", started, f.d.opts.PerTarget)
	}
}

// A pass starts reading at the floor, the first due time the previous
// pass found, so the keys of events already posted and deleted are not
// read again; an event stored later, even one due before the floor, still
// lowers it and is posted.
func TestPassesStartAtTheFloorAndStoredEventsLowerIt(t *testing.T) {
	rcv := newReceiver(t, always(204))
	f := newFixture(t, hookConfig(rcv.URL, newSecret(t), []string{"127.0.0.1/32"}, 48*time.Hour), Options{})
	f.clk.Step(time.Hour)
	f.submit(t, "shop.shop", func(m *queue.Message) []Event {
		evs := queuedN(50)(m)
		for i := range evs {
			evs[i].Timestamp = f.clk.Now()
		}
		return evs
	})
	f.d.Start()
	eventually(t, "50 events posted and forgotten", func() bool { return len(f.pending(t)) == 0 && len(rcv.deliveries()) == 50 })
	eventually(t, "a floor past every deleted event", func() bool {
		f.d.Wake()
		f.d.mu.Lock()
		defer f.d.mu.Unlock()
		return f.d.floorSet && f.d.floor.After(f.clk.Now())
	})
	// An event due before every deleted one (a queued event carries its
	// message's receipt time, which may be earlier).
	f.submit(t, "shop.shop", func(m *queue.Message) []Event {
		e := ForMessage(Queued, m, t0)
		e.Recipient = "early@example.net"
		return []Event{e}
	})
	eventually(t, "the event stored below the floor posted", func() bool {
		got := rcv.deliveries()
		return len(got) == 51 && strings.Contains(string(got[50].Body), "early@example.net")
	})
	if n := len(rcv.deliveries()); n != 51 {
		t.Fatalf("%d posts, want 51", n)
	}
}
