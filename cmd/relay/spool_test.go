package main_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// relayMetric reads one sample from the relay's /metrics (labels as
// name=value pairs); -1 when it is not there.
func relayMetric(t *testing.T, p *relayProc, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := fams[name]
	if !ok {
		return -1
	}
metrics:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue metrics
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	return -1
}

// useQueueDir points the relay's config at another queue directory and
// free-space reserve.
func (p *relayProc) useQueueDir(dir, minFree string) {
	p.t.Helper()
	b, err := os.ReadFile(p.cfgPath)
	if err != nil {
		p.t.Fatal(err)
	}
	old := fmt.Sprintf("queue: {directory: %s, minFreeSpace: 1Mi}", p.queueDir)
	if !strings.Contains(string(b), old) {
		p.t.Fatalf("config has no %q", old)
	}
	p.queueDir = dir
	cfg := strings.Replace(string(b), old, fmt.Sprintf("queue: {directory: %s, minFreeSpace: %s}", dir, minFree), 1)
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// mountTmpfs mounts a tmpfs of size bytes (root only).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a full disk is simulated on a small tmpfs, which needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mounting a small tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt
}

// fillTo grows filler until the filesystem has about free bytes left.
func fillTo(t *testing.T, filler string, free int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(filler), &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * st.Bsize
	f, err := os.OpenFile(filler, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if grow := avail - free; grow > 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, fi.Size(), grow); err != nil {
			t.Fatalf("filling the disk: %v", err)
		}
	}
}

// TestRelayFullDiskDuringIntakeAndDelivery fills a real (tmpfs)
// filesystem under a delivering relay: intake is refused with 452 4.3.1
// while accepted mail still has room; below the reserve of state writes
// the outcome of a finished attempt cannot be written, and the message is
// parked instead of being delivered again and again; once space returns
// every accepted message is delivered, at most twice.
func TestRelayFullDiskDuringIntakeAndDelivery(t *testing.T) {
	mnt := mountTmpfs(t, 96<<20)
	w := newWorld(t, "127.77.8.1", "127.77.8.2", "127.77.8.5")
	w.mx("ok.test", 10, "mx.ok.test", "127.77.8.1")
	w.mx("later.test", 10, "mx.later.test", "127.77.8.2")
	w.mx("example.com", 10, "mx.example.com", "127.77.8.5")
	gate := make(chan struct{})
	okSink := w.sink("127.77.8.1", smtpsink.Options{Script: smtpsink.Script{Data: smtpsink.Action{Wait: gate}}})
	later := w.sink("127.77.8.2", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(451, "4.3.0", "not now")}}}})
	w.sink("127.77.8.5", smtpsink.Options{})

	p := w.relay("{schedule: [1s], maxAge: 1h, delayWarningAfter: 0s}", "")
	// On 96 MiB the memtable is 1.5 MiB, so every class leaves 3 MiB for a
	// new write-ahead log on top of its share of the 32 MiB reserve: intake
	// refuses below 35 MiB free, DSNs below 19 MiB, state writes below
	// 11 MiB, removals below 7 MiB (package queue).
	p.useQueueDir(filepath.Join(mnt, "queue"), "32Mi")
	p.start()

	const n = 30
	var ids []string
	for i := range n {
		id := fmt.Sprintf("full-%d", i)
		submit(t, p, "app@example.com", []string{"u@ok.test", "u@later.test"}, id)
		ids = append(ids, id)
	}
	poll(t, "deliveries waiting at the gate", 60*time.Second, func() bool { return okSink.Waiting("data") >= 1 })

	filler := filepath.Join(mnt, "filler")
	fillTo(t, filler, 30<<20)
	_, err := trySubmit(p, "app@example.com", []string{"u@ok.test"}, "refused")
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("submission with the intake reserve used: %v, want 452 4.3.1", err)
	}
	if f := relayMetric(t, p, "mailroom_queue_state_write_failures_total", "write", "outcome"); f != 0 {
		t.Fatalf("state writes failed (%v) before intake was refused", f)
	}

	// Below the state writes' reserve: the attempts at the gate finish,
	// their outcomes cannot be written. The filler is topped up while
	// waiting, since Pebble gives space back too (a flushed memtable's log).
	fillTo(t, filler, 9<<20)
	close(gate)
	poll(t, "failed outcome writes, retried", 60*time.Second, func() bool {
		fillTo(t, filler, 9<<20)
		return relayMetric(t, p, "mailroom_queue_state_write_failures_total", "write", "outcome") >= 3
	})
	for id, c := range delivered(okSink) {
		if c > 1 {
			t.Fatalf("%s delivered %d times while its state could not be written", id, c)
		}
	}
	if parked := relayMetric(t, p, "mailroom_queue_parked_messages"); parked < 1 {
		t.Fatalf("parked messages %v, want some", parked)
	}

	// Space comes back; the other destination recovers.
	os.Remove(filler)
	later.SetScript(smtpsink.Script{})
	poll(t, "every accepted message delivered to both destinations", 120*time.Second, func() bool {
		a, b := delivered(okSink), delivered(later)
		for _, id := range ids {
			if a[id] == 0 || b[id] == 0 {
				return false
			}
		}
		return true
	})
	poll(t, "the queue to empty", 60*time.Second, func() bool {
		var list []adminMessage
		adminJSON(t, p, "GET", "/v1/messages", &list)
		return len(list) == 0
	})
	dups := 0
	for _, id := range ids {
		c := delivered(okSink)[id]
		if c > 2 {
			t.Errorf("%s delivered %d times to ok.test; at most one duplicate per failed write", id, c)
		}
		dups += c - 1
	}
	if _, ok := delivered(okSink)["refused"]; ok {
		t.Error("the refused submission was delivered")
	}
	t.Logf("%d messages accepted, all delivered; %d duplicate deliveries; outcome write failures %v, lease write failures %v",
		n, dups, relayMetric(t, p, "mailroom_queue_state_write_failures_total", "write", "outcome"),
		relayMetric(t, p, "mailroom_queue_state_write_failures_total", "write", "lease"))
}

// TestRelayUnderRepeatedSIGKILLDeliversEveryAcknowledgedMessage kills the
// relay 20 times while mail arrives and is delivered, then lets it finish:
// every message that got a 250 reaches the sink; duplicates (a kill
// between a delivery and the write of its outcome) are counted and
// reported.
func TestRelayUnderRepeatedSIGKILLDeliversEveryAcknowledgedMessage(t *testing.T) {
	const cycles = 20
	w := newWorld(t, "127.77.9.1")
	w.mx("ok.test", 10, "mx.ok.test", "127.77.9.1")
	sink := w.sink("127.77.9.1", smtpsink.Options{})
	p := w.relay("{schedule: [1s], maxAge: 1h, delayWarningAfter: 0s}", "")

	var mu sync.Mutex
	acked := map[string]bool{}
	sent := map[string]bool{}
	seq := 0
	for cycle := range cycles {
		p.start()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					seq++
					id := fmt.Sprintf("k%d", seq)
					sent[id] = true
					mu.Unlock()
					if _, err := trySubmit(p, "app@example.com", []string{"u@ok.test"}, id); err != nil {
						return
					}
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
			}()
		}
		// Kill once intake and delivery both moved, at a random moment.
		before := len(sink.Accepted())
		poll(t, "intake and delivery in this cycle", 60*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= 10*(cycle+1) && len(sink.Accepted()) > before
		})
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		p.signal(syscall.SIGKILL)
		p.wait()
		close(stop)
		wg.Wait()
	}
	p.start()
	poll(t, "every acknowledged message delivered", 180*time.Second, func() bool {
		got := delivered(sink)
		mu.Lock()
		defer mu.Unlock()
		for id := range acked {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	got := delivered(sink)
	dups, unacked := 0, 0
	for id, c := range got {
		mu.Lock()
		a, s := acked[id], sent[id]
		mu.Unlock()
		if !s {
			t.Errorf("%s delivered but never sent", id)
		}
		if !a {
			unacked++ // committed, but the kill came before its 250
		}
		dups += c - 1
	}
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	t.Logf("%d kill -9 cycles: %d messages acknowledged, all delivered, 0 lost; %d duplicate deliveries; %d delivered whose 250 the kill cut off",
		cycles, n, dups, unacked)
}
