package peer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/peer"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/testutil/promtest"
)

const userUnknown = "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"

type sharing struct {
	*member
	sup *delivery.Suppressions
}

// startSharing starts a member whose suppression list, in its real queue
// store, is shared with the pool.
func startSharing(t *testing.T, ca *CA, name string, ln net.Listener, addrs []string, opts peer.SuppressionOptions) *sharing {
	t.Helper()
	m := startMember(t, ca, name, ln, addrs)
	sup, err := delivery.NewSuppressions(m.q.Suppressions(), 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m.node.ShareSuppressions(ctx, sup, opts)
	return &sharing{member: m, sup: sup}
}

// withAddresses is cfg with other peer addresses, as a reload brings.
func withAddresses(cfg *config.Config, addrs ...string) *config.Config {
	c := *cfg
	p := *cfg.Peer
	p.Addresses = addrs
	c.Peer = &p
	return &c
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func suppressed(s *sharing, addr string) bool {
	_, ok := s.sup.Lookup(addr)
	return ok
}

// TestSuppressionPushReachesEveryMemberAtOnce: with pulls an hour apart,
// only the push can spread a change. A bounce at relay-0 is honoured by
// relay-1 and relay-2; a removal at relay-1 lifts it at both others. Each
// member's own address is among the addresses and is found and skipped.
func TestSuppressionPushReachesEveryMemberAtOnce(t *testing.T) {
	ca := NewCA(t)
	lns := []net.Listener{listen(t), listen(t), listen(t)}
	addrs := []string{addr(lns[0]), addr(lns[1]), addr(lns[2])}
	opts := peer.SuppressionOptions{PullInterval: time.Hour}
	var ms []*sharing
	for i, ln := range lns {
		ms = append(ms, startSharing(t, ca, fmt.Sprintf("relay-%d", i), ln, addrs, opts))
	}
	a, b, c := ms[0], ms[1], ms[2]

	if err := a.sup.Add("Bob@example.net", userUnknown, "mx1.example.net", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "relay-1 and relay-2 to honour the bounce", 10*time.Second, func() bool {
		return suppressed(b, "bob@example.net") && suppressed(c, "bob@example.net")
	})
	e, _ := c.sup.Lookup("bob@example.net")
	if e.Reply != userUnknown || e.RemoteHost != "mx1.example.net" {
		t.Errorf("relay-2's entry %+v", e)
	}
	waitFor(t, "relay-0's pushes to be counted", 10*time.Second, func() bool {
		return promtest.Value(t, a.reg, "mailroom_suppression_pushes_total", "result", "ok") == 2
	})

	if removed, err := b.sup.Remove("bob@example.net"); err != nil || !removed {
		t.Fatalf("Remove at relay-1 = %v, %v", removed, err)
	}
	waitFor(t, "the removal to reach relay-0 and relay-2", 10*time.Second, func() bool {
		return !suppressed(a, "bob@example.net") && !suppressed(c, "bob@example.net")
	})

	for _, m := range ms {
		if err := testutil.GatherAndCompare(m.reg, strings.NewReader(`
# HELP mailroom_suppression_entries Addresses on the pool's suppression list, as this member holds it.
# TYPE mailroom_suppression_entries gauge
mailroom_suppression_entries 0
`), "mailroom_suppression_entries"); err != nil {
			t.Errorf("%s: %v", m.name, err)
		}
		if n := promtest.Value(t, m.reg, "mailroom_suppression_pushes_total", "result", "failed"); n != 0 {
			t.Errorf("%s: %v failed pushes", m.name, n)
		}
	}
}

// TestSuppressionPullCatchesUpAMemberThatMissedThePush: relay-1 is down
// when relay-0 records a bounce and lifts another, so the pushes fail;
// started later, relay-1 gets both from its start-up pull, and a change
// made while its push is lost arrives with the next periodic pull.
func TestSuppressionPullCatchesUpAMemberThatMissedThePush(t *testing.T) {
	ca := NewCA(t)
	la, lb := listen(t), listen(t)
	addrs := []string{addr(la), addr(lb)}
	bAddr := lb.Addr().String()
	lb.Close() // relay-1 is down
	a := startSharing(t, ca, "relay-0", la, addrs, peer.SuppressionOptions{PullInterval: time.Hour, PushAttempts: 1})
	_ = a.sup.Add("bob@example.net", userUnknown, "", "")
	_ = a.sup.Add("carol@example.net", userUnknown, "", "")
	if removed, _ := a.sup.Remove("carol@example.net"); !removed {
		t.Fatal("not removed")
	}
	waitFor(t, "relay-0's pushes to fail", 10*time.Second, func() bool {
		return promtest.Value(t, a.reg, "mailroom_suppression_pushes_total", "result", "failed") >= 1
	})

	lb2, err := net.Listen("tcp", bAddr)
	if err != nil {
		t.Skipf("relay-1's port was taken meanwhile: %v", err)
	}
	b := startSharing(t, ca, "relay-1", lb2, addrs, peer.SuppressionOptions{PullInterval: 200 * time.Millisecond})
	waitFor(t, "relay-1's start-up pull", 10*time.Second, func() bool { return suppressed(b, "bob@example.net") })
	if suppressed(b, "carol@example.net") {
		t.Error("the removed address arrived suppressed")
	}
	// Lost pushes: relay-0 sends to nobody (its push queue to relay-1 is
	// replaced by a dead address), relay-1 still pulls.
	if err := a.node.Apply(withAddresses(a.cfg, addr(la))); err != nil {
		t.Fatal(err)
	}
	_ = a.sup.Add("dave@example.net", userUnknown, "", "")
	waitFor(t, "relay-1's periodic pull", 10*time.Second, func() bool { return suppressed(b, "dave@example.net") })
	// The counter is added to after the merged entries are visible.
	waitFor(t, "relay-1 to count its merges", 10*time.Second, func() bool {
		return promtest.Value(t, b.reg, "mailroom_suppression_merged_total") >= 3
	})
	if err := testutil.GatherAndCompare(b.reg, strings.NewReader(`
# HELP mailroom_suppression_entries Addresses on the pool's suppression list, as this member holds it.
# TYPE mailroom_suppression_entries gauge
mailroom_suppression_entries 2
`), "mailroom_suppression_entries"); err != nil {
		t.Error(err)
	}
	if n := promtest.Value(t, b.reg, "mailroom_suppression_merged_total"); n != 3 {
		t.Errorf("relay-1 merged %v versions, want 3 (bob, carol's tombstone, dave)", n)
	}
}

// TestSuppressionFullSyncOf100000EntriesIsPaged: a new member copies a
// list of 100,000 addresses in pages of at most 1000 entries (one page in
// memory at a time), and ends with every one of them.
func TestSuppressionFullSyncOf100000EntriesIsPaged(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 100,000 entries")
	}
	const n = 100_000
	ca := NewCA(t)
	la, lb := listen(t), listen(t)
	addrs := []string{addr(la), addr(lb)}
	a := startSharing(t, ca, "relay-0", la, addrs, peer.SuppressionOptions{PullInterval: time.Hour})
	kv := a.q.Suppressions()
	now := time.Now()
	for i := range n {
		e := delivery.Suppression{Address: fmt.Sprintf("user%06d@example.net", i), Reply: userUnknown,
			Added: now, Updated: now, Seen: now, Expires: now.Add(time.Hour)}
		v, _ := json.Marshal(e)
		if err := kv.Put(e.Address, v, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.sup.Sweep(); err != nil || a.sup.Count() != n {
		t.Fatalf("relay-0 holds %d entries (%v)", a.sup.Count(), err)
	}

	b := startSharing(t, ca, "relay-1", lb, addrs, peer.SuppressionOptions{PullInterval: time.Hour})
	waitFor(t, "relay-1 to copy the whole list", 3*time.Minute, func() bool { return b.sup.Count() == n })
	for _, i := range []int{0, 1, 49_999, 99_999} {
		if !suppressed(b, fmt.Sprintf("user%06d@example.net", i)) {
			t.Errorf("user%06d missing at relay-1", i)
		}
	}
	// 100 full pages and the short last one.
	if p := promtest.Value(t, b.reg, "mailroom_suppression_pulls_total", "result", "ok"); p < n/1000 {
		t.Errorf("relay-1 read %v pages, want at least %d", p, n/1000)
	}
}

// TestSuppressionEndpointsRefuseBadRequests: one invalid input per case,
// each answered 400 with the field named; nothing is stored.
func TestSuppressionEndpointsRefuseBadRequests(t *testing.T) {
	ca := NewCA(t)
	ln := listen(t)
	m := startSharing(t, ca, "relay-0", ln, []string{addr(ln)}, peer.SuppressionOptions{PullInterval: time.Hour})
	hc := client(t, ca)
	base := "https://" + addr(ln) + "/v1/peer/suppressions"
	valid := func(mut func(map[string]any)) string {
		e := map[string]any{"address": "bob@example.net", "reply": userUnknown, "added": time.Now(),
			"updated": time.Now(), "expires": time.Now().Add(time.Hour)}
		mut(e)
		b, _ := json.Marshal(map[string]any{"entries": []any{e}})
		return string(b)
	}
	for name, tc := range map[string]struct {
		method, query, body, field string
	}{
		"body not JSON":      {"POST", "", "{entries: nope", "entries"},
		"no address":         {"POST", "", valid(func(e map[string]any) { delete(e, "address") }), "address"},
		"no expiry":          {"POST", "", valid(func(e map[string]any) { delete(e, "expires") }), "expires"},
		"no version":         {"POST", "", valid(func(e map[string]any) { delete(e, "updated"); delete(e, "added") }), "updated"},
		"since not a number": {"GET", "?since=yesterday", "", "since"},
		"negative since":     {"GET", "?since=-5", "", "since"},
		"limit zero":         {"GET", "?limit=0", "", "limit"},
		"limit too large":    {"GET", "?limit=100000", "", "limit"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.query, strings.NewReader(tc.body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.field) {
			t.Errorf("%s: %s %q, want 400 naming %s", name, resp.Status, b, tc.field)
		}
	}
	if m.sup.Count() != 0 {
		t.Errorf("%d entries stored from bad requests", m.sup.Count())
	}
	// A good one is merged.
	resp, err := hc.Post(base, "application/json", bytes.NewReader([]byte(valid(func(map[string]any) {}))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !suppressed(m, "bob@example.net") {
		t.Errorf("valid push: %s", resp.Status)
	}
}

func TestSuppressionEndpointsNeedASharedList(t *testing.T) {
	ca := NewCA(t)
	ln := listen(t)
	startMember(t, ca, "relay-0", ln, []string{addr(ln)})
	resp, err := client(t, ca).Get("https://" + addr(ln) + "/v1/peer/suppressions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("without ShareSuppressions: %s", resp.Status)
	}
}
