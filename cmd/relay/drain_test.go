package main_test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/certs"
	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// withPeer gives p a peer listener and section: certificates from ca as
// the operator issues them, every member's address, and self (empty: from
// MAILROOM_POD_NAME in the environment).
func withPeer(t *testing.T, p *relayProc, ca certs.Pair, port int, self string, addrs []string, shutdownDelay string) {
	t.Helper()
	leaf, err := certs.Issue(rand.Reader, ca, []string{"localhost"}, certs.Server|certs.Client, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.dir, "peer")
	os.Mkdir(dir, 0o700)
	for name, b := range map[string][]byte{"ca.crt": ca.Cert, "tls.crt": leaf.Cert, "tls.key": leaf.Key} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(p.cfgPath)
	cfg := strings.Replace(string(b), "listeners: {", fmt.Sprintf("listeners: {peer: \"127.0.0.1:%d\", ", port), 1)
	cfg = strings.Replace(cfg, "limits: {shutdownGrace: 20s}", "limits: {shutdownGrace: 20s, shutdownDelay: "+shutdownDelay+"}", 1)
	cfg += fmt.Sprintf("peer: {caFile: %[1]s/ca.crt, certFile: %[1]s/tls.crt, keyFile: %[1]s/tls.key, self: %[2]q, addresses: [%[3]s]}\n",
		dir, self, strings.Join(addrs, ", "))
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func status(t *testing.T, p *relayProc) relay.Status {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st relay.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// setConfig replaces a relay's config file the way a Secret update does:
// a new file renamed over the old.
func setConfig(t *testing.T, p *relayProc, content []byte) {
	t.Helper()
	tmp := p.cfgPath + ".new"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p.cfgPath); err != nil {
		t.Fatal(err)
	}
}

// appendConfig adds YAML to a relay's config file the way a Secret update
// replaces it: a new file renamed over the old.
func appendConfig(t *testing.T, p *relayProc, yaml string) {
	t.Helper()
	b, _ := os.ReadFile(p.cfgPath)
	setConfig(t, p, append(b, yaml...))
}

// TestDrainHandsTheQueueToAnotherRelayWhichDeliversExactlyOnce: two relay
// processes of one pool on loopback. Relay A acknowledges a message (its
// delivery is paused, so the message stays in A's queue), then both get
// the configuration "drain: [relay-a]". A turns readiness off, stops
// taking mail, hands its queue to B over the mutually authenticated peer
// path and reports drained; B delivers the message, exactly once, to a
// go-smtp sink, with the headers A's intake added (DKIM signature,
// Received).
func TestDrainHandsTheQueueToAnotherRelayWhichDeliversExactlyOnce(t *testing.T) {
	const ip = "127.77.20.1"
	w := newWorld(t, ip)
	sink := w.sink(ip, smtpsink.Options{})
	w.mx("dest.test", 10, "mx.dest.test", ip)
	ca, err := certs.NewCA(rand.Reader, "pool CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := freePort(t), freePort(t)
	addrs := []string{fmt.Sprintf("\"localhost:%d\"", pa), fmt.Sprintf("\"localhost:%d\"", pb)}
	a := w.relay(fastRetry, ", paused: true")
	withPeer(t, a, ca, pa, "", addrs, "1s")
	a.env = append(a.env, "MAILROOM_POD_NAME=relay-a") // the downward API
	b := w.relay(fastRetry, "")
	withPeer(t, b, ca, pb, "relay-b", addrs, "1s")
	a.start()
	b.start()

	qid := submit(t, a, "app@example.com", []string{"rcpt@dest.test"}, "handover-1")
	if st := status(t, a); st.Queued != 1 || st.Draining {
		t.Fatalf("A before the drain: %+v", st)
	}

	appendConfig(t, b, "drain: [relay-a]\n")
	appendConfig(t, a, "drain: [relay-a]\n")
	poll(t, "A to report draining and not ready", 30*time.Second, func() bool {
		st := status(t, a)
		return st.Draining && !st.Ready
	})
	poll(t, "A to hand its queue over and report drained", time.Minute, func() bool {
		st := status(t, a)
		return st.Drained && st.Queued == 0
	})
	poll(t, "B to deliver the handed-over message", time.Minute, func() bool { return delivered(sink)["handover-1"] >= 1 })
	poll(t, "B's queue to empty", time.Minute, func() bool { return status(t, b).Queued == 0 })
	if st := status(t, b); st.Draining || !st.Ready {
		t.Errorf("B: %+v", st)
	}
	if _, err := trySubmit(a, "app@example.com", []string{"rcpt@dest.test"}, "after-drain"); err == nil {
		t.Error("A still accepts mail after the drain")
	}
	if n := delivered(sink)["handover-1"]; n != 1 {
		t.Fatalf("the message was delivered %d times, want exactly once", n)
	}
	msgs := sink.Accepted()
	data := string(msgs[len(msgs)-1].Data)
	if !strings.Contains(data, "DKIM-Signature:") || !strings.Contains(data, qid) {
		t.Errorf("the delivered message lost what A's intake added (DKIM-Signature, Received with A's queue id %s):\n%s", qid, data)
	}
	if !strings.Contains(a.log.String(), "peer: message handed over") || !strings.Contains(b.log.String(), "peer: message taken over") {
		t.Errorf("handover not logged:\nA:\n%s\nB:\n%s", a.log.String(), b.log.String())
	}
	if got := metric(t, a, `mailroom_peer_handover_total{result="handed_over"}`); got != 1 {
		t.Errorf("A handed_over = %v", got)
	}
	if got := metric(t, b, `mailroom_peer_received_total{result="imported"}`); got != 1 {
		t.Errorf("B imported = %v", got)
	}

	// The drained pod is then deleted by the scale-down: it exits at once,
	// its queue empty.
	start := time.Now()
	a.signal(syscall.SIGTERM)
	if err := a.wait(); err != nil {
		t.Fatalf("A after SIGTERM: %v\n%s", err, a.log.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a drained relay took %v to stop", d)
	}
	time.Sleep(500 * time.Millisecond)
	if n := delivered(sink)["handover-1"]; n != 1 {
		t.Fatalf("delivered %d times after A stopped", n)
	}
}

// TestDrainCancelledBeforeIntakeStopsTakesMailAgain: a relay listed in
// drain and then removed again within limits.shutdownDelay goes back to
// ready and keeps taking mail; it never reports drained.
func TestDrainCancelledBeforeIntakeStopsTakesMailAgain(t *testing.T) {
	ca, err := certs.NewCA(rand.Reader, "pool CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pa := freePort(t)
	a := newRelayFiles(t)
	withPeer(t, a, ca, pa, "relay-a", []string{fmt.Sprintf("\"localhost:%d\"", pa)}, "1m")
	a.start()
	orig, _ := os.ReadFile(a.cfgPath)
	appendConfig(t, a, "drain: [relay-a]\n")
	poll(t, "A to report draining and not ready", 30*time.Second, func() bool {
		st := status(t, a)
		return st.Draining && !st.Ready && !st.Drained
	})
	// Still accepting during the delay.
	submit(t, a, "app@example.com", []string{"rcpt@dest.test"}, "during-delay")
	setConfig(t, a, orig)
	poll(t, "A to be ready again", 30*time.Second, func() bool {
		st := status(t, a)
		return !st.Draining && st.Ready
	})
	submit(t, a, "app@example.com", []string{"rcpt@dest.test"}, "after-cancel")
	if st := status(t, a); st.Queued != 2 || st.Drained {
		t.Fatalf("status %+v", st)
	}
}
