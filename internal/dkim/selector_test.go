package dkim_test

import (
	"slices"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/dkim"
)

func TestNewSelectorIsNamedAfterTheUTCDay(t *testing.T) {
	// 23:30 in New York on the 24th is the 25th in UTC.
	ny := time.FixedZone("EST", -5*3600)
	now := time.Date(2026, 11, 24, 23, 30, 0, 0, ny)
	if got := dkim.NewSelector(now, func(string) bool { return false }); got != "mr-20261125" {
		t.Fatalf("got %q, want mr-20261125", got)
	}
}

func TestNewSelectorCountsUpWhenTheDayIsTaken(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var taken []string
	for _, want := range []string{"mr-20261125", "mr-20261125-2", "mr-20261125-3"} {
		got := dkim.NewSelector(now, func(s string) bool { return slices.Contains(taken, s) })
		if got != want {
			t.Fatalf("got %q, want %q (taken %q)", got, want, taken)
		}
		taken = append(taken, got)
	}
}
