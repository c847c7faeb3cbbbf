package delivery_test

import (
	"path/filepath"
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
	if err := s.Add("Bob@Example.NET", unknownReply, "mx1.example.net"); err != nil {
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

func TestSuppressionExpires(t *testing.T) {
	c := newClock()
	s, _ := delivery.NewSuppressions(nil, time.Hour, c.Now)
	_ = s.Add("bob@example.net", unknownReply, "")
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
	_ = s.Add("bob@example.net", unknownReply, "")
	_ = s.Add("alice@example.net", unknownReply, "")
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
	_ = s.Add("bob@example.net", unknownReply, "")
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
