package delivery_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
)

const unknownReply = "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"

// openSuppressions opens the list in a real queue store in dir.
func openSuppressions(t *testing.T, dir string, ttl time.Duration, now func() time.Time) (*delivery.Suppressions, func()) {
	t.Helper()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := delivery.NewSuppressions(q.Suppressions(), ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return s, func() { q.Close() }
}

func TestSuppressionSurvivesReopening(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	s, done := openSuppressions(t, dir, 30*24*time.Hour, c.Now)
	if err := s.Add("Bob@Example.NET", unknownReply, "mx1.example.net", ""); err != nil {
		t.Fatal(err)
	}
	done()

	again, done := openSuppressions(t, dir, 30*24*time.Hour, c.Now)
	defer done()
	e, ok := again.Lookup("bob@example.net")
	if !ok {
		t.Fatal("suppression lost on reopening")
	}
	if e.Reply != unknownReply || e.RemoteHost != "mx1.example.net" || !e.Expires.Equal(c.Now().Add(30*24*time.Hour)) {
		t.Errorf("entry = %+v", e)
	}
}

func TestASuppressionRemembersTheSenderDomainsWhoseMailBouncedThere(t *testing.T) {
	c := newClock()
	s, _ := delivery.NewSuppressions(nil, time.Hour, c.Now)
	_ = s.Add("bob@example.net", unknownReply, "", "App@Shop.Example.COM")
	c.Advance(time.Minute)
	_ = s.Add("bob@example.net", unknownReply, "", "news@other.example.com")
	_ = s.Add("bob@example.net", unknownReply, "", "") // a DSN's null sender adds none
	_ = s.Add("bob@example.net", unknownReply, "", "again@shop.example.com")
	e, _ := s.Lookup("bob@example.net")
	if want := []string{"other.example.com", "shop.example.com"}; !slices.Equal(e.SenderDomains, want) {
		t.Fatalf("sender domains %v, want %v (each once, the newest last)", e.SenderDomains, want)
	}
	for i := range 40 {
		_ = s.Add("bob@example.net", unknownReply, "", fmt.Sprintf("a@d%d.example", i))
	}
	e, _ = s.Lookup("bob@example.net")
	if len(e.SenderDomains) != 16 || e.SenderDomains[15] != "d39.example" {
		t.Errorf("after 40 more senders: %d domains %v, want the newest 16", len(e.SenderDomains), e.SenderDomains)
	}
	_, _ = s.Remove("bob@example.net")
	_ = s.Add("bob@example.net", unknownReply, "", "x@fresh.example")
	if e, _ := s.Lookup("bob@example.net"); !slices.Equal(e.SenderDomains, []string{"fresh.example"}) {
		t.Errorf("re-added after lifting: %v, want only the new sender's domain", e.SenderDomains)
	}
}

func TestSuppressionExpires(t *testing.T) {
	c := newClock()
	s, _ := delivery.NewSuppressions(nil, time.Hour, c.Now)
	_ = s.Add("bob@example.net", unknownReply, "", "")
	c.Advance(59 * time.Minute)
	if _, ok := s.Lookup("bob@example.net"); !ok {
		t.Fatal("expired early")
	}
	c.Advance(time.Minute)
	if _, ok := s.Lookup("bob@example.net"); ok {
		t.Error("still suppressed after the TTL")
	}
	if len(s.List()) != 0 {
		t.Errorf("List = %v", s.List())
	}
}

func TestSuppressionRemoveLiftsIt(t *testing.T) {
	s, done := openSuppressions(t, t.TempDir(), time.Hour, nil)
	defer done()
	_ = s.Add("bob@example.net", unknownReply, "", "")
	_ = s.Add("alice@example.net", unknownReply, "", "")
	removed, err := s.Remove("BOB@example.net")
	if err != nil || !removed {
		t.Fatalf("Remove = %v, %v", removed, err)
	}
	if _, ok := s.Lookup("bob@example.net"); ok {
		t.Error("still suppressed")
	}
	if removed, _ := s.Remove("bob@example.net"); removed {
		t.Error("removed twice")
	}
	if l := s.List(); len(l) != 1 || l[0].Address != "alice@example.net" {
		t.Errorf("List = %+v", l)
	}
}

func TestSuppressionHitsAreCountedAndKept(t *testing.T) {
	dir := t.TempDir()
	s, done := openSuppressions(t, dir, time.Hour, nil)
	_ = s.Add("bob@example.net", unknownReply, "", "")
	s.Hit("bob@example.net")
	e, _ := s.Hit("bob@example.net")
	if e.Hits != 2 {
		t.Errorf("hits = %d", e.Hits)
	}
	done()
	again, done := openSuppressions(t, dir, time.Hour, nil)
	defer done()
	if e, _ := again.Lookup("bob@example.net"); e.Hits != 2 {
		t.Errorf("hits after reopening = %d", e.Hits)
	}
}

// twoMembers are two copies of one pool's list on one fake clock, as two
// relays hold it.
func twoMembers(t *testing.T, ttl time.Duration) (*delivery.Suppressions, *delivery.Suppressions, *clock) {
	t.Helper()
	c := newClock()
	a, doneA := openSuppressions(t, t.TempDir(), ttl, c.Now)
	t.Cleanup(doneA)
	b, doneB := openSuppressions(t, t.TempDir(), ttl, c.Now)
	t.Cleanup(doneB)
	return a, b, c
}

// copyChanges merges every version from stored after since into to, as a
// pull does, and returns how many were stored.
func copyChanges(t *testing.T, from, to *delivery.Suppressions, since time.Time) int {
	t.Helper()
	es, err := from.Changes(since, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	n, err := to.MergeAll(es)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSuppressionMergedFromAnotherMemberIsHonoured(t *testing.T) {
	a, b, c := twoMembers(t, time.Hour)
	if err := a.Add("Bob@example.net", unknownReply, "mx1.example.net", ""); err != nil {
		t.Fatal(err)
	}
	if n := copyChanges(t, a, b, time.Time{}); n != 1 {
		t.Fatalf("merged %d versions, want 1", n)
	}
	e, ok := b.Lookup("bob@example.net")
	if !ok || e.Reply != unknownReply || e.RemoteHost != "mx1.example.net" || !e.Expires.Equal(c.Now().Add(time.Hour)) {
		t.Fatalf("b's entry %+v, %v", e, ok)
	}
	// The same version again changes nothing.
	if n := copyChanges(t, a, b, time.Time{}); n != 0 {
		t.Errorf("merged the same version again: %d", n)
	}
	if b.Count() != 1 || a.Count() != 1 {
		t.Errorf("counts a=%d b=%d", a.Count(), b.Count())
	}
}

func TestSuppressionRemovalWinsOverTheOlderEntryEverywhere(t *testing.T) {
	a, b, c := twoMembers(t, time.Hour)
	_ = a.Add("bob@example.net", unknownReply, "", "")
	copyChanges(t, a, b, time.Time{})
	c.Advance(time.Second)
	if removed, err := b.Remove("bob@example.net"); err != nil || !removed {
		t.Fatalf("Remove = %v, %v", removed, err)
	}
	// Anti-entropy replays a's older entry to b: it stays lifted.
	if n := copyChanges(t, a, b, time.Time{}); n != 0 {
		t.Errorf("the older entry replaced the removal (%d merged)", n)
	}
	if _, ok := b.Lookup("bob@example.net"); ok {
		t.Fatal("resurrected at b")
	}
	// b's tombstone reaches a and lifts it there.
	copyChanges(t, b, a, time.Time{})
	if _, ok := a.Lookup("bob@example.net"); ok {
		t.Fatal("still suppressed at a after the removal reached it")
	}
	if a.Count() != 0 || b.Count() != 0 || len(a.List()) != 0 {
		t.Errorf("counts a=%d b=%d, a's list %v", a.Count(), b.Count(), a.List())
	}
	// A new hard bounce later suppresses it again, everywhere.
	c.Advance(time.Second)
	_ = a.Add("bob@example.net", unknownReply, "", "")
	copyChanges(t, a, b, time.Time{})
	if _, ok := b.Lookup("bob@example.net"); !ok {
		t.Error("a later bounce was not honoured after a removal")
	}
}

func TestSuppressionTombstoneIsKeptUntilTheEntryWouldHaveExpired(t *testing.T) {
	a, b, c := twoMembers(t, time.Hour)
	_ = a.Add("bob@example.net", unknownReply, "", "")
	copyChanges(t, a, b, time.Time{})
	c.Advance(10 * time.Minute)
	_, _ = a.Remove("bob@example.net")
	es, _ := a.Changes(time.Time{}, "", 10)
	if len(es) != 1 || !es[0].Removed || !es[0].Expires.Equal(c.Now().Add(50*time.Minute)) {
		t.Fatalf("tombstone %+v", es)
	}
	c.Advance(50 * time.Minute)
	if err := a.Sweep(); err != nil {
		t.Fatal(err)
	}
	if es, _ := a.Changes(time.Time{}, "", 10); len(es) != 0 {
		t.Errorf("expired tombstone still listed: %+v", es)
	}
	// b's copy expired too: nothing comes back from either side.
	if _, ok := b.Lookup("bob@example.net"); ok {
		t.Error("b still suppresses after the expiry")
	}
}

func TestSuppressionMergeLastWriterWins(t *testing.T) {
	_, b, c := twoMembers(t, time.Hour)
	t0 := c.Now()
	v := func(at time.Duration, reply string, removed bool) delivery.Suppression {
		return delivery.Suppression{Address: "bob@example.net", Reply: reply, Added: t0, Expires: t0.Add(time.Hour),
			Updated: t0.Add(at), Removed: removed}
	}
	for _, step := range []struct {
		v      delivery.Suppression
		stored bool
		live   string // the reply in force after, "" when lifted
	}{
		{v(2*time.Second, "second", false), true, "second"},
		{v(1*time.Second, "first", false), false, "second"}, // older: ignored
		{v(2*time.Second, "", true), true, ""},              // same instant: the removal wins
		{v(2*time.Second, "again", false), false, ""},       // and is not undone by a tie
		{v(3*time.Second, "third", false), true, "third"},
	} {
		stored, err := b.Merge(step.v)
		if err != nil || stored != step.stored {
			t.Fatalf("Merge(%+v) = %v, %v; want %v", step.v, stored, err, step.stored)
		}
		e, ok := b.Lookup("bob@example.net")
		if (step.live == "") == ok || (ok && e.Reply != step.live) {
			t.Fatalf("after %+v: entry %+v, %v; want %q", step.v, e, ok, step.live)
		}
	}
}

func TestSuppressionMergeRefusesIncompleteVersions(t *testing.T) {
	_, b, c := twoMembers(t, time.Hour)
	good := delivery.Suppression{Address: "bob@example.net", Added: c.Now(), Updated: c.Now(), Expires: c.Now().Add(time.Hour)}
	for name, tc := range map[string]struct {
		mutate func(*delivery.Suppression)
		field  string
	}{
		"no address": {func(e *delivery.Suppression) { e.Address = " " }, "address"},
		"no expiry":  {func(e *delivery.Suppression) { e.Expires = time.Time{} }, "expires"},
		"no version": {func(e *delivery.Suppression) { e.Updated, e.Added = time.Time{}, time.Time{} }, "updated"},
	} {
		e := good
		tc.mutate(&e)
		if _, err := b.Merge(e); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err %v, want one naming %s", name, err, tc.field)
		}
	}
	expired := good
	expired.Expires = c.Now()
	if stored, err := b.Merge(expired); stored || err != nil {
		t.Errorf("an expired version: %v, %v", stored, err)
	}
	if b.Count() != 0 {
		t.Errorf("count %d", b.Count())
	}
}

func TestSuppressionOnChangeReportsThisMembersChangesOnly(t *testing.T) {
	a, b, c := twoMembers(t, time.Hour)
	var got []string
	b.OnChange(func(e delivery.Suppression) { got = append(got, fmt.Sprintf("%s removed=%v", e.Address, e.Removed)) })
	_ = a.Add("alice@example.net", unknownReply, "", "")
	copyChanges(t, a, b, time.Time{}) // merged: not b's own change
	_ = b.Add("bob@example.net", unknownReply, "", "")
	c.Advance(time.Second)
	_, _ = b.Remove("bob@example.net")
	_, _ = b.Remove("carol@example.net") // nothing to lift
	want := []string{"bob@example.net removed=false", "bob@example.net removed=true"}
	if !slices.Equal(got, want) {
		t.Errorf("OnChange saw %q, want %q", got, want)
	}
}

func TestSuppressionChangesArePagedAndFilteredBySince(t *testing.T) {
	a, _, c := twoMembers(t, time.Hour)
	for i := range 7 {
		_ = a.Add(fmt.Sprintf("user%d@example.net", i), unknownReply, "", "")
	}
	c.Advance(time.Minute)
	mark := c.Now()
	c.Advance(time.Second)
	_ = a.Add("user3@example.net", unknownReply, "", "") // renewed after mark
	_, _ = a.Remove("user5@example.net")

	var all []string
	after := ""
	for pages := 0; ; pages++ {
		es, err := a.Changes(time.Time{}, after, 3)
		if err != nil || pages > 5 {
			t.Fatalf("page %d: %v", pages, err)
		}
		for _, e := range es {
			all = append(all, e.Address)
		}
		if len(es) < 3 {
			break
		}
		after = es[len(es)-1].Address
	}
	if len(all) != 7 || !slices.IsSorted(all) {
		t.Errorf("all pages: %v", all)
	}
	recent, _ := a.Changes(mark, "", 100)
	if len(recent) != 2 || recent[0].Address != "user3@example.net" || recent[1].Address != "user5@example.net" || !recent[1].Removed {
		t.Errorf("changes since the mark: %+v", recent)
	}
	if none, _ := a.Changes(c.Now(), "", 100); len(none) != 0 {
		t.Errorf("changes since now: %+v", none)
	}
	if _, err := a.Changes(time.Time{}, "", 0); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("limit 0: %v", err)
	}
	if a.Count() != 6 {
		t.Errorf("count %d, want 6", a.Count())
	}
}

func TestSuppressionCountSurvivesReopeningAndSweepDropsExpired(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	s, done := openSuppressions(t, dir, time.Hour, c.Now)
	_ = s.Add("a@example.net", unknownReply, "", "")
	c.Advance(30 * time.Minute)
	_ = s.Add("b@example.net", unknownReply, "", "")
	done()
	s, done = openSuppressions(t, dir, time.Hour, c.Now)
	defer done()
	if s.Count() != 2 {
		t.Fatalf("count after reopening %d", s.Count())
	}
	c.Advance(31 * time.Minute) // a expired, unread
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if s.Count() != 1 {
		t.Errorf("count after sweep %d, want 1", s.Count())
	}
}

// fillSuppressions writes n entries straight into a real queue store
// (unsynced, the fast way to make a large list) and opens the list on it.
func fillSuppressions(tb testing.TB, n int, now time.Time) *delivery.Suppressions {
	tb.Helper()
	q, err := queue.Open(filepath.Join(tb.TempDir(), "queue"), queue.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { q.Close() })
	kv := q.Suppressions()
	for i := range n {
		e := delivery.Suppression{Address: fmt.Sprintf("user%d@example.net", i), Reply: unknownReply,
			Added: now, Updated: now, Seen: now, Expires: now.Add(time.Hour)}
		v, _ := json.Marshal(e)
		if err := kv.Put(e.Address, v, false); err != nil {
			tb.Fatal(err)
		}
	}
	s, err := delivery.NewSuppressions(kv, time.Hour, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if s.Count() != n {
		tb.Fatalf("count %d, want %d", s.Count(), n)
	}
	return s
}

// BenchmarkSuppressionLookup shows a lookup costs the same with 1,000 and
// 100,000 suppressed addresses (one key read each): compare the ns/op of
// the two sizes. Half the lookups hit, half miss.
func BenchmarkSuppressionLookup(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := fillSuppressions(b, n, time.Now())
			addrs := make([]string, 1024)
			for i := range addrs {
				if i%2 == 0 {
					addrs[i] = fmt.Sprintf("user%d@example.net", (i*7919)%n)
				} else {
					addrs[i] = fmt.Sprintf("nobody%d@example.net", i)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				_, ok := s.Lookup(addrs[i%len(addrs)])
				if ok != (i%len(addrs)%2 == 0) {
					b.Fatalf("lookup %d: %v", i, ok)
				}
			}
		})
	}
}
