package delivery_test

import (
	"testing"
	"time"

	"mailroom.io/mailroom/internal/delivery"
)

var policy = delivery.RetryPolicy{
	Schedule:          []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour},
	MaxAge:            120 * time.Hour,
	DelayWarningAfter: 4 * time.Hour,
	Jitter:            delivery.DefaultJitter,
}

func TestRetryFollowsTheScheduleAndRepeatsTheLastStep(t *testing.T) {
	p := policy
	p.Jitter = 0
	want := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, time.Hour, time.Hour}
	for i, w := range want {
		if got := p.Delay(i+1, 0.5); got != w {
			t.Errorf("after attempt %d: %v, want %v", i+1, got, w)
		}
	}
}

func TestRetryJitterStaysWithinItsFraction(t *testing.T) {
	for _, rnd := range []float64{0, 0.25, 0.5, 0.999999} {
		got := policy.Delay(2, rnd)
		if got < 270*time.Second || got > 330*time.Second {
			t.Errorf("rnd %v: %v, want 5m ±10%%", rnd, got)
		}
	}
	if lo, hi := policy.Delay(2, 0), policy.Delay(2, 0.999999); lo >= hi {
		t.Errorf("jitter does not spread: %v .. %v", lo, hi)
	}
}

func TestRetryGivesUpAtMaxAgeAndMakesALastAttemptThen(t *testing.T) {
	received := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	p := policy
	p.Jitter = 0

	next, giveUp := p.Next(received, received.Add(time.Minute), 1, 0.5)
	if giveUp || !next.Equal(received.Add(2*time.Minute)) {
		t.Errorf("early: next %v giveUp %v", next, giveUp)
	}
	// Half an hour before expiry, an hourly step would overshoot: the
	// last attempt is at the expiry itself.
	now := received.Add(p.MaxAge - 30*time.Minute)
	next, giveUp = p.Next(received, now, 40, 0.5)
	if giveUp || !next.Equal(p.Expires(received)) {
		t.Errorf("near expiry: next %v giveUp %v, want %v", next, giveUp, p.Expires(received))
	}
	if _, giveUp = p.Next(received, p.Expires(received), 41, 0.5); !giveUp {
		t.Error("at expiry: does not give up")
	}
}

func TestDelayWarningIsDueOnceOldEnoughAndNotAfterExpiry(t *testing.T) {
	received := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		age  time.Duration
		want bool
	}{{time.Hour, false}, {4 * time.Hour, true}, {100 * time.Hour, true}, {120 * time.Hour, false}} {
		if got := policy.DelayWarningDue(received, received.Add(tc.age)); got != tc.want {
			t.Errorf("age %v: due %v, want %v", tc.age, got, tc.want)
		}
	}
	off := policy
	off.DelayWarningAfter = 0
	if off.DelayWarningDue(received, received.Add(50*time.Hour)) {
		t.Error("delayWarningAfter 0 must disable the warning")
	}
}

func TestRetryPolicyValidation(t *testing.T) {
	if err := policy.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]delivery.RetryPolicy{
		"empty schedule": {MaxAge: time.Hour},
		"zero step":      {Schedule: []time.Duration{0}, MaxAge: time.Hour},
		"no max age":     {Schedule: []time.Duration{time.Minute}},
		"jitter 1":       {Schedule: []time.Duration{time.Minute}, MaxAge: time.Hour, Jitter: 1},
	} {
		if p.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
