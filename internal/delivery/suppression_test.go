package delivery_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/delivery"
)

const unknownReply = "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"

func TestSuppressionSurvivesReopening(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	s, err := delivery.OpenSuppressions(dir, 30*24*time.Hour, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add("Bob@Example.NET", unknownReply, "mx1.example.net"); err != nil {
		t.Fatal(err)
	}

	again, err := delivery.OpenSuppressions(dir, 30*24*time.Hour, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := again.Lookup("bob@example.net")
	if !ok {
		t.Fatal("suppression lost on reopening")
	}
	if e.Reply != unknownReply || e.RemoteHost != "mx1.example.net" || !e.Expires.Equal(c.t.Add(30*24*time.Hour)) {
		t.Errorf("entry = %+v", e)
	}
}

func TestSuppressionFileIsReplacedWholeWithoutLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := delivery.OpenSuppressions(dir, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"a@example.net", "b@example.net", "c@example.net"} {
		if err := s.Add(a, unknownReply, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Remove("b@example.net"); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != delivery.SuppressionFile {
		t.Fatalf("directory holds %v, want only %s", entries, delivery.SuppressionFile)
	}
	data, err := os.ReadFile(filepath.Join(dir, delivery.SuppressionFile))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int
		Entries []delivery.Suppression
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("file is not JSON: %v\n%s", err, data)
	}
	var got []string
	for _, e := range f.Entries {
		got = append(got, e.Address)
	}
	if f.Version != 1 || strings.Join(got, ",") != "a@example.net,c@example.net" {
		t.Errorf("file: version %d, entries %v", f.Version, got)
	}
}

func TestSuppressionExpires(t *testing.T) {
	c := newClock()
	s, _ := delivery.OpenSuppressions("", time.Hour, c.Now)
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
	s, _ := delivery.OpenSuppressions(t.TempDir(), time.Hour, nil)
	_ = s.Add("bob@example.net", unknownReply, "")
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
}

func TestSuppressionHitsAreCountedAndFlushed(t *testing.T) {
	dir := t.TempDir()
	s, _ := delivery.OpenSuppressions(dir, time.Hour, nil)
	_ = s.Add("bob@example.net", unknownReply, "")
	s.Hit("bob@example.net")
	e, _ := s.Hit("bob@example.net")
	if e.Hits != 2 {
		t.Errorf("hits = %d", e.Hits)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	again, _ := delivery.OpenSuppressions(dir, time.Hour, nil)
	if e, _ := again.Lookup("bob@example.net"); e.Hits != 2 {
		t.Errorf("hits after reopening = %d", e.Hits)
	}
}

func TestSuppressionRefusesACorruptFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, delivery.SuppressionFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := delivery.OpenSuppressions(dir, time.Hour, nil); err == nil {
		t.Error("a corrupt list was silently dropped")
	}
}
