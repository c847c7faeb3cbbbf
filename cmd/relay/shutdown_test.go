package main_test

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// TestSIGTERMCutsOffStalledDeliveriesAndRestartDeliversThem: deliveries
// in progress to a server that never answers the end of DATA do not hold
// the relay past delivery.shutdownGrace; they are written back as not yet
// attempted, and the restarted relay delivers every one of them.
func TestSIGTERMCutsOffStalledDeliveriesAndRestartDeliversThem(t *testing.T) {
	const ip = "127.77.12.1"
	w := newWorld(t, ip)
	// Stall: the sink reads the message and never answers (until the test
	// ends), so the relay's attempts stay in progress; the relay's own
	// timeout for that reply is 10 minutes.
	sink := w.sink(ip, smtpsink.Options{Script: smtpsink.Script{Data: smtpsink.Action{Stall: true}}})
	w.mx("stall.test", 10, "mx.stall.test", ip)
	p := w.relay(fastRetry, ", shutdownGrace: 5s")
	p.start()

	want := map[string]string{} // test id -> queue id
	for i := range 3 {
		id := fmt.Sprintf("cut-%d", i)
		want[id] = submit(t, p, "app@example.com", []string{fmt.Sprintf("rcpt%d@stall.test", i)}, id)
	}
	poll(t, "all three deliveries stalled at the end of DATA", time.Minute, func() bool { return len(sink.Messages()) == 3 })

	// The queue gauges see them in progress.
	if n := metric(t, p, `mailroom_queue_messages{state="active"}`); n != 3 {
		t.Errorf(`mailroom_queue_messages{state="active"} = %v with three attempts in progress, want 3`, n)
	}
	if age := metric(t, p, "mailroom_queue_oldest_message_age_seconds"); age <= 0 || age > 3600 {
		t.Errorf("mailroom_queue_oldest_message_age_seconds = %v, want a few seconds", age)
	}

	p.signal(syscall.SIGTERM)
	poll(t, "readyz to report not ready during the delivery grace period", time.Minute, func() bool {
		resp, err := http.Get("http://" + p.httpAddr + "/readyz")
		if err != nil {
			t.Fatalf("the relay stopped serving /readyz before reporting not ready: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	// p.wait allows 90s; without the cut-off the relay would wait for the
	// sink's reply for 10 minutes.
	if err := p.wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.log.String())
	}
	if !strings.Contains(p.log.String(), "deliveries cut off") {
		t.Errorf("the log does not say that deliveries were cut off:\n%s", p.log.String())
	}

	// Offline, the queue holds all three, due again and not counted as
	// attempted.
	q, err := queue.Open(p.queueDir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for id, qid := range want {
		m, ok := q.Get(qid)
		if !ok {
			t.Errorf("%s (%s) is not in the queue after shutdown", id, qid)
			continue
		}
		if m.Attempts != 0 || m.Recipients[0].State != "" || m.Recipients[0].Attempts != 0 {
			t.Errorf("%s: the cut-off attempt was recorded: %+v", id, m)
		}
	}
	q.Close()

	sink.SetScript(smtpsink.Script{})
	p.start()
	poll(t, "every cut-off message to be delivered after the restart", 2*time.Minute, func() bool {
		got := delivered(sink)
		for id := range want {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	if got := delivered(sink); len(got) != 3 {
		t.Errorf("delivered after restart: %v", got)
	}
	poll(t, "the queue to be empty", time.Minute, func() bool {
		return metric(t, p, `mailroom_queue_messages{state="active"}`) == 0 &&
			metric(t, p, `mailroom_queue_messages{state="deferred"}`) == 0
	})
	if age := metric(t, p, "mailroom_queue_oldest_message_age_seconds"); age != 0 {
		t.Errorf("oldest message age of an empty queue = %v, want 0", age)
	}
	p.signal(syscall.SIGTERM)
	if err := p.wait(); err != nil {
		t.Fatalf("second exit: %v\n%s", err, p.log.String())
	}
}
