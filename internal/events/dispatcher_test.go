package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/testutil/dnstest"
)

// resolverOf resolves through the DNS server at addr only.
func resolverOf(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

func delivered(m *queue.Message) []Event {
	return []Event{ForResult(m, delivery.Result{Recipient: "ann@example.net", Status: delivery.Delivered, Code: "2.0.0",
		Reply: delivery.Reply{Code: 250, Enhanced: "2.0.0", Text: "OK queued as 9F"}, RemoteHost: "mx.example.net"}, 1, t0)}
}

func TestWebhooksAreSignedAsTheStandardSaysCheckedByPython(t *testing.T) {
	rcv := newReceiver(t, always(204))
	secret := newSecret(t)
	f := newFixture(t, hookConfig(rcv.URL+"/hooks", secret, []string{"127.0.0.1/32"}, time.Hour), Options{})
	evs := f.submit(t, "shop.shop", delivered)
	f.d.Start()
	eventually(t, "the delivered event at the receiver", func() bool { return len(rcv.deliveries()) == 1 })
	eventually(t, "the posted event forgotten", func() bool { return len(f.pending(t)) == 0 })

	got := rcv.deliveries()[0]
	if id := got.Header.Get("webhook-id"); id != evs[0].ID || !strings.HasPrefix(id, "evt_") {
		t.Fatalf("webhook-id %q, want the event id %q", id, evs[0].ID)
	}
	if ts := got.Header.Get("webhook-timestamp"); ts != fmt.Sprint(t0.Unix()) {
		t.Fatalf("webhook-timestamp %q, want the dispatcher clock's %d", ts, t0.Unix())
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var e Event
	if err := json.Unmarshal(got.Body, &e); err != nil {
		t.Fatal(err)
	}
	want := Event{ID: evs[0].ID, Type: Delivered, Timestamp: t0, QueueID: evs[0].QueueID, MessageID: "abc@example.com",
		Recipient: "ann@example.net", EnhancedStatus: "2.0.0", Reply: "250 2.0.0 OK queued as 9F", RemoteMTA: "mx.example.net",
		Attempt: 1, Tags: []string{"reset"}, Metadata: map[string]string{"user": "42"}, Credential: "shop.shop"}
	if fmt.Sprintf("%+v", e) != fmt.Sprintf("%+v", want) {
		t.Fatalf("body\n got %+v\nwant %+v", e, want)
	}

	tampered := got
	tampered.Body = []byte(strings.Replace(string(got.Body), "delivered", "bounced", 1))
	other := got
	other.Header = got.Header.Clone()
	other.Header.Set("webhook-id", "evt_other")
	verdicts := pythonVerify(t, secret, t0.Add(time.Minute), []post{got, tampered, other})
	if want := []string{"ok", "bad: no matching v1 signature", "bad: no matching v1 signature"}; !slices.Equal(verdicts, want) {
		t.Fatalf("python verdicts %q, want %q", verdicts, want)
	}
	if v := pythonVerify(t, secret, t0.Add(6*time.Minute), []post{got}); v[0] != "bad: timestamp outside the tolerance" {
		t.Fatalf("a 6-minute-old signature: %q", v[0])
	}
	if v := pythonVerify(t, newSecret(t), t0, []post{got}); v[0] != "bad: no matching v1 signature" {
		t.Fatalf("another secret: %q", v[0])
	}
	if n := testutil.ToFloat64(f.d.m.deliveries.WithLabelValues("shop.shop", "delivered")); n != 1 {
		t.Fatalf("deliveries{delivered} = %v", n)
	}
}

func TestFailedPostsAreRetriedWithBackoffUntilAccepted(t *testing.T) {
	rcv := newReceiver(t, func(n int) int {
		if n < 3 {
			return 503
		}
		return 200
	})
	f := newFixture(t, hookConfig(rcv.URL, newSecret(t), []string{"127.0.0.1/32"}, 24*time.Hour),
		Options{InitialBackoff: 10 * time.Second, MaxBackoff: time.Hour})
	evs := f.submit(t, "shop.shop", delivered)
	f.d.Start()
	for n := 1; n <= 3; n++ {
		eventually(t, fmt.Sprintf("failure %d rescheduled", n), func() bool {
			p := f.pending(t)
			return len(p) == 1 && p[0].At.After(f.clk.Now())
		})
		wait := f.pending(t)[0].At.Sub(f.clk.Now())
		base := 10 * time.Second << (n - 1)
		if lo, hi := time.Duration(0.7*float64(base)), time.Duration(1.3*float64(base))+time.Nanosecond; wait < lo || wait > hi {
			t.Fatalf("retry %d after %s, want %s..%s (10s doubling, ±30%%)", n, wait, lo, hi)
		}
		if got := len(rcv.deliveries()); got != n {
			t.Fatalf("%d posts before the retry is due, want %d", got, n)
		}
		f.clk.Step(wait)
		eventually(t, fmt.Sprintf("post %d", n+1), func() bool { return len(rcv.deliveries()) == n+1 })
	}
	eventually(t, "the accepted event forgotten", func() bool { return len(f.pending(t)) == 0 })
	for _, d := range rcv.deliveries() {
		if d.Header.Get("webhook-id") != evs[0].ID {
			t.Fatalf("a retry with another id: %q", d.Header.Get("webhook-id"))
		}
	}
	ds := rcv.deliveries()
	if string(ds[0].Body) != string(ds[3].Body) {
		t.Fatalf("the retried body differs:\n%s\n%s", ds[0].Body, ds[3].Body)
	}
	if n := testutil.ToFloat64(f.d.m.deliveries.WithLabelValues("shop.shop", "http_5xx")); n != 3 {
		t.Fatalf("deliveries{http_5xx} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(f.d.m.pending); n != 0 {
		t.Fatalf("pending = %v after delivery", n)
	}
}

func TestAnEventNotAcceptedWithinRetentionIsDropped(t *testing.T) {
	rcv := newReceiver(t, always(500))
	f := newFixture(t, hookConfig(rcv.URL, newSecret(t), []string{"127.0.0.1/32"}, time.Hour),
		Options{InitialBackoff: 10 * time.Minute, MaxBackoff: 20 * time.Minute})
	f.submit(t, "shop.shop", delivered)
	if n := testutil.ToFloat64(f.d.m.pending); n != 1 {
		t.Fatalf("pending = %v, want 1", n)
	}
	f.d.Start()
	for step := 0; len(f.pending(t)) > 0; step++ {
		if step > 20 {
			t.Fatalf("still pending after %s", f.clk.Now().Sub(t0))
		}
		// Step n makes the (n+1)th post; it may be done before this
		// check starts, so the count is not read here first.
		eventually(t, "a post rescheduled or dropped", func() bool {
			p := f.pending(t)
			return len(p) == 0 || p[0].At.After(f.clk.Now()) && len(rcv.deliveries()) >= step+1
		})
		if p := f.pending(t); len(p) > 0 {
			if p[0].At.After(t0.Add(time.Hour)) {
				t.Fatalf("retry at %s, after the retention ends", p[0].At.Sub(t0))
			}
			f.clk.Step(p[0].At.Sub(f.clk.Now()))
			f.d.Wake()
		}
	}
	if f.clk.Now().Before(t0.Add(time.Hour)) {
		t.Fatalf("dropped at %s, before the retention of 1h", f.clk.Now().Sub(t0))
	}
	if n := testutil.ToFloat64(f.d.m.dropped); n != 1 {
		t.Fatalf("dropped = %v, want 1", n)
	}
	if n := len(rcv.deliveries()); n < 4 || n > 8 {
		t.Fatalf("%d posts in an hour of 10-20 minute retries", n)
	}
}

func TestOnlyWantedEventsAreStoredButAllAreCountedAndListed(t *testing.T) {
	rcv := newReceiver(t, always(200))
	reg := prometheus.NewRegistry()
	f := newFixture(t, hookConfig(rcv.URL, newSecret(t), []string{"127.0.0.1/32"}, time.Hour, "bounced"), Options{Registerer: reg})
	f.submit(t, "shop.shop", func(m *queue.Message) []Event {
		bounced := ForResult(m, classified(delivery.Result{Recipient: "ann@example.net", Status: delivery.Failed, Reason: delivery.ReasonUnknownUser,
			Code: "5.1.1", Reply: delivery.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"}}), 2, t0.Add(time.Second))
		return append(delivered(m), bounced)
	})
	f.submit(t, "quiet.shop", delivered) // no webhook
	if p := f.pending(t); len(p) != 1 {
		t.Fatalf("%d events stored for dispatch, want only the one bounced event", len(p))
	}
	if n := testutil.ToFloat64(f.d.m.events.WithLabelValues("shop.shop", "delivered")); n != 1 {
		t.Fatalf("events{shop.shop,delivered} = %v", n)
	}
	if n := testutil.ToFloat64(f.d.m.events.WithLabelValues("quiet.shop", "delivered")); n != 1 {
		t.Fatalf("events{quiet.shop,delivered} = %v", n)
	}
	if n, err := testutil.GatherAndCount(reg, "mailroom_events_total"); err != nil || n != 3 {
		t.Fatalf("mailroom_events_total has %d series (%v), want 3", n, err)
	}
	all, _ := f.d.List(Filter{})
	if len(all) != 3 || all[0].Type != Bounced || all[1].Credential == all[2].Credential {
		t.Fatalf("list (newest first): %+v", all)
	}
	bounced, _ := f.d.List(Filter{Credential: "shop.shop", Type: Bounced})
	if len(bounced) != 1 || bounced[0].BounceType != Hard || bounced[0].BounceClass != "invalid_recipient" || bounced[0].EnhancedStatus != "5.1.1" || bounced[0].Attempt != 2 {
		t.Fatalf("bounced events: %+v", bounced)
	}
	if one, _ := f.d.List(Filter{Limit: 1}); len(one) != 1 {
		t.Fatalf("limit 1 returned %d", len(one))
	}
	f.clk.Step(time.Second) // the bounce happened at t0+1s: due then
	f.d.Start()
	eventually(t, "the bounced event posted", func() bool { return len(rcv.deliveries()) == 1 })
	var e Event
	json.Unmarshal(rcv.deliveries()[0].Body, &e)
	if e.Type != Bounced {
		t.Fatalf("posted %s, want only bounced", e.Type)
	}
}

func TestEventTypesMatchTheConfigurationsList(t *testing.T) {
	var names []string
	for _, ty := range Types {
		names = append(names, string(ty))
	}
	if !slices.Equal(names, config.EventTypes) {
		t.Fatalf("events.Types %v, config.EventTypes %v", names, config.EventTypes)
	}
}

func TestANameResolvingToTheMetadataAddressIsRefusedWhenDialling(t *testing.T) {
	dns := dnstest.Start(t)
	dns.Add(t, "metadata.svc.cluster.local. 60 IN A 169.254.169.254")
	f := newFixture(t, hookConfig("http://metadata.svc.cluster.local/latest", newSecret(t), nil, time.Hour),
		Options{Resolver: resolverOf(dns.Addr)})
	f.submit(t, "shop.shop", delivered)
	f.d.Start()
	eventually(t, "the post refused", func() bool {
		return testutil.ToFloat64(f.d.m.deliveries.WithLabelValues("shop.shop", "refused")) == 1
	})
	if p := f.pending(t); len(p) != 1 {
		t.Fatalf("a refused event must stay for a retry; %d pending", len(p))
	}
}

func TestDialCheckRefusesLinkLocalUnlessListedAsACIDR(t *testing.T) {
	for _, c := range []struct {
		addr    string
		allowed []string
		ok      bool
	}{
		{"169.254.169.254:80", nil, false},
		{"[fe80::1]:443", nil, false},
		{"[::ffff:169.254.169.254]:80", nil, false},
		{"0.0.0.0:80", nil, false},
		{"169.254.169.254:80", []string{"169.254.169.254/32"}, true},
		{"10.96.0.10:443", nil, true},
		{"127.0.0.1:8080", nil, true},
	} {
		err := checkAddr(c.addr, &settings{targets: config.Events{AllowedTargets: c.allowed}})
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("checkAddr(%s, %v) = %v, want ok=%v", c.addr, c.allowed, err, c.ok)
		}
	}
	if !(config.Events{AllowedTargets: []string{"10.0.0.0/8"}}).ListsAddr(netip.MustParseAddr("10.1.2.3")) {
		t.Fatal("10.1.2.3 not in 10.0.0.0/8")
	}
}

func TestBackoffDoublesWithJitterUpToTheMaximum(t *testing.T) {
	for n, base := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		for range 20 {
			got := Backoff(time.Second, 10*time.Second, n+1)
			if lo, hi := time.Duration(0.7*float64(base)), time.Duration(1.3*float64(base))+time.Nanosecond; got < lo || got > hi {
				t.Fatalf("Backoff(retry %d) = %s, want %s..%s", n+1, got, lo, hi)
			}
		}
	}
}
