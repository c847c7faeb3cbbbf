package delivery_test

import (
	"fmt"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"mailroom.io/mailroom/internal/delivery"
)

// clock is a manual clock for caches and memories
// (k8s.io/utils/clock/testing); Advance is its Step.
type clock struct{ *clocktesting.FakeClock }

func newClock() *clock {
	return &clock{clocktesting.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))}
}
func (c clock) Advance(d time.Duration) { c.Step(d) }

func TestHostDownIsRememberedForItsTTL(t *testing.T) {
	c := newClock()
	h := delivery.NewHostDown(2*time.Minute, c.Now)
	h.Mark("192.0.2.1:25", "connection refused")
	why, until, down := h.Down("192.0.2.1:25")
	if !down || why != "connection refused" || !until.Equal(c.Now().Add(2*time.Minute)) {
		t.Fatalf("Down = %q %v %v", why, until, down)
	}
	if _, _, down := h.Down("192.0.2.2:25"); down {
		t.Error("another server is down too")
	}
	c.Advance(2 * time.Minute)
	if _, _, down := h.Down("192.0.2.1:25"); down {
		t.Error("still down after the TTL")
	}
}

func TestHostDownClearsWhenTheServerAnswers(t *testing.T) {
	h := delivery.NewHostDown(time.Minute, nil)
	h.Mark("192.0.2.1:25", "timeout")
	h.Clear("192.0.2.1:25")
	if _, _, down := h.Down("192.0.2.1:25"); down {
		t.Error("still down after Clear")
	}
}

func TestHostDownMemoryIsBounded(t *testing.T) {
	h := delivery.NewHostDown(time.Hour, nil)
	for i := 0; i < 30000; i++ {
		h.Mark(fmt.Sprintf("192.0.%d.%d:25", i/256, i%256), "timeout")
	}
	if n := h.Len(); n > 10000 {
		t.Fatalf("%d servers remembered; the memory must stay bounded", n)
	}
	if _, _, down := h.Down("192.0.117.47:25"); !down {
		t.Fatal("the most recently marked server was forgotten")
	}
}
