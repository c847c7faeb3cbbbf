package relay

import (
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// TestAuthThrottleMeansNFailuresPerWindow: limits.authFailures failures
// within limits.authFailureWindow refuse AUTH until the oldest of them is
// a window old; nothing trickles back in between, as it would from a
// token bucket.
func TestAuthThrottleMeansNFailuresPerWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	a := newAuthThrottle()
	a.clock = clk
	ip := netip.MustParseAddr("192.0.2.7")
	const n, window = 3, time.Hour
	try := func(at time.Duration, fail bool) bool {
		t.Helper()
		clk.SetTime(t0.Add(at))
		if !a.begin(ip, n, window, time.Millisecond) {
			return false
		}
		a.end(ip, fail, window)
		return true
	}
	for _, at := range []time.Duration{0, 10 * time.Minute, 20 * time.Minute} {
		if !try(at, true) {
			t.Fatalf("attempt at +%v refused before %d failures", at, n)
		}
	}
	for _, at := range []time.Duration{21 * time.Minute, 40 * time.Minute, 59 * time.Minute} {
		if try(at, false) {
			t.Fatalf("attempt at +%v allowed: 3 failures within the last hour", at)
		}
	}
	// The first failure is an hour old: one attempt is free again.
	if !try(time.Hour+time.Second, true) {
		t.Fatal("attempt refused after the first failure left the window")
	}
	if try(time.Hour+2*time.Second, false) {
		t.Fatal("attempt allowed right after a new failure filled the window again")
	}
	// Successes do not count.
	if !try(time.Hour+10*time.Minute+time.Second, false) || !try(time.Hour+10*time.Minute+2*time.Second, false) {
		t.Fatal("successful attempts were refused")
	}
}

// TestAuthThrottleReservesAttemptsInFlight: attempts that have begun
// count against the failures left, so parallel sessions cannot each get a
// guess checked; a success frees its place.
func TestAuthThrottleReservesAttemptsInFlight(t *testing.T) {
	a := newAuthThrottle()
	a.clock = clocktesting.NewFakePassiveClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	ip := netip.MustParseAddr("192.0.2.8")
	for i := 0; i < 2; i++ {
		if !a.begin(ip, 2, time.Hour, time.Millisecond) {
			t.Fatalf("attempt %d refused", i)
		}
	}
	if a.begin(ip, 2, time.Hour, 10*time.Millisecond) {
		t.Fatal("a third attempt began while two were in flight with two failures left")
	}
	a.end(ip, false, time.Hour)
	if !a.begin(ip, 2, time.Hour, time.Millisecond) {
		t.Fatal("attempt refused after one in flight succeeded")
	}
	// A waiting attempt goes ahead as soon as one in flight succeeds.
	done := make(chan bool)
	go func() { done <- a.begin(ip, 2, time.Hour, time.Minute) }()
	a.end(ip, false, time.Hour)
	if !<-done {
		t.Fatal("waiting attempt refused although a place came free")
	}
	// Other addresses are not affected.
	if !a.begin(netip.MustParseAddr("192.0.2.9"), 2, time.Hour, time.Millisecond) {
		t.Fatal("another address was refused")
	}
}
