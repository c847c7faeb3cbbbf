package main_test

import (
	"crypto/rand"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/certs"
	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// rcptAttempts counts the RCPT commands for addr the sink received.
func rcptAttempts(s *smtpsink.Sink, addr string) int {
	n := 0
	for _, c := range s.Conns() {
		for _, l := range c.Transcript {
			if strings.EqualFold(l, "RCPT TO:<"+addr+">") || strings.HasPrefix(strings.ToUpper(l), strings.ToUpper("RCPT TO:<"+addr+">")+" ") {
				n++
			}
		}
	}
	return n
}

// suppressionsAt is the relay's suppression list through its admin API.
func suppressionsAt(t *testing.T, p *relayProc) map[string]delivery.Suppression {
	t.Helper()
	var list []delivery.Suppression
	if code := adminJSON(t, p, "GET", "/v1/suppressions", &list); code != 200 {
		t.Fatalf("GET /v1/suppressions: %d", code)
	}
	out := map[string]delivery.Suppression{}
	for _, e := range list {
		out[e.Address] = e
	}
	return out
}

// TestSuppressionListIsSharedByThePool: relay processes of one pool on
// loopback, wired as the operator wires pods (a peer section with
// certificates from the pool CA, every member's address). Pulls are an
// hour apart, so between running relays only the push carries a change.
//
//   - A hard bounce (550 5.1.1 from a real SMTP sink) at relay-a makes
//     relay-b bounce mail to that address without contacting the sink.
//   - Lifting it at relay-b (relay queue unsuppress) lifts it at relay-a,
//     whose next message to the address reaches the sink again.
//   - relay-c, started afterwards with an empty queue, gets the list from
//     its peers at start-up: the other suppressed address, and not the
//     lifted one.
func TestSuppressionListIsSharedByThePool(t *testing.T) {
	const ip = "127.77.30.1"
	w := newWorld(t, ip)
	unknown := smtpsink.Action{Reply: smtpsink.Reply(550, "5.1.1", "User unknown")}
	sink := w.sink(ip, smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"bob@dest.test": unknown, "carol@dest.test": unknown}}})
	w.mx("dest.test", 10, "mx.dest.test", ip)
	w.mx("example.com", 10, "mx.example.com", ip) // the DSNs
	ca, err := certs.NewCA(rand.Reader, "pool CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var addrs []string
	for _, p := range ports {
		addrs = append(addrs, fmt.Sprintf("\"localhost:%d\"", p))
	}
	retry := "{schedule: [1h], maxAge: 2h, delayWarningAfter: 0s}"
	relays := map[string]*relayProc{}
	for i, name := range []string{"relay-a", "relay-b", "relay-c"} {
		p := w.relay(retry, "")
		withPeer(t, p, ca, ports[i], name, addrs, "0s")
		p.env = append(p.env, "MAILROOM_SUPPRESSION_PULL_INTERVAL=1h")
		relays[name] = p
	}
	a, b, c := relays["relay-a"], relays["relay-b"], relays["relay-c"]
	a.start()
	b.start()

	submit(t, a, "app@example.com", []string{"bob@dest.test", "carol@dest.test"}, "first")
	poll(t, "relay-a to suppress bob and carol", 60*time.Second, func() bool {
		l := suppressionsAt(t, a)
		return l["bob@dest.test"].Address != "" && l["carol@dest.test"].Address != ""
	})
	poll(t, "relay-b to honour relay-a's hard bounces", 60*time.Second, func() bool {
		l := suppressionsAt(t, b)
		return l["bob@dest.test"].Address != "" && l["carol@dest.test"].Address != ""
	})
	if e := suppressionsAt(t, b)["bob@dest.test"]; !strings.Contains(e.Reply, "550 5.1.1 User unknown") {
		t.Errorf("relay-b's entry does not carry the reply: %+v", e)
	}
	before := rcptAttempts(sink, "bob@dest.test")
	submit(t, b, "app@example.com", []string{"bob@dest.test"}, "at-b")
	poll(t, "relay-b to bounce the suppressed address", 60*time.Second, func() bool {
		return metric(t, b, "mailroom_delivery_suppressed_total") == 1
	})
	if n := rcptAttempts(sink, "bob@dest.test"); n != before {
		t.Errorf("relay-b contacted the sink for a suppressed address (%d RCPTs)", n-before)
	}
	if n := metric(t, a, `mailroom_suppression_pushes_total{result="ok"}`); n < 1 {
		t.Errorf("relay-a pushes ok = %v", n)
	}

	if out, err := exec.Command(relayBinary(t), "queue", "-admin", b.adminAddr, "unsuppress", "bob@dest.test").CombinedOutput(); err != nil {
		t.Fatalf("relay queue unsuppress at relay-b: %v: %s", err, out)
	}
	poll(t, "the removal at relay-b to lift bob at relay-a", 60*time.Second, func() bool {
		_, ok := suppressionsAt(t, a)["bob@dest.test"]
		return !ok
	})
	submit(t, a, "app@example.com", []string{"bob@dest.test"}, "again")
	poll(t, "relay-a to try bob at the sink again", 60*time.Second, func() bool {
		return rcptAttempts(sink, "bob@dest.test") == before+1
	})

	// relay-c is new: its start-up pull copies the list. bob was
	// suppressed again by relay-a's new bounce; lift it once more so the
	// list holds carol only, and relay-c must not bring bob back.
	poll(t, "relay-a's new bounce of bob to reach relay-b", 60*time.Second, func() bool {
		_, ok := suppressionsAt(t, b)["bob@dest.test"]
		return ok
	})
	if code := adminJSON(t, a, "DELETE", "/v1/suppressions/bob@dest.test", nil); code != 200 {
		t.Fatalf("DELETE at relay-a: %d", code)
	}
	poll(t, "the second removal to reach relay-b", 60*time.Second, func() bool {
		_, ok := suppressionsAt(t, b)["bob@dest.test"]
		return !ok
	})
	c.start()
	poll(t, "relay-c to get the list from its peers", 60*time.Second, func() bool {
		_, ok := suppressionsAt(t, c)["carol@dest.test"]
		return ok
	})
	if _, ok := suppressionsAt(t, c)["bob@dest.test"]; ok {
		t.Error("relay-c suppresses the lifted address")
	}
	if n := metric(t, c, "mailroom_suppression_entries"); n != 1 {
		t.Errorf("relay-c's entries gauge = %v, want 1", n)
	}
	carol := rcptAttempts(sink, "carol@dest.test")
	submit(t, c, "app@example.com", []string{"carol@dest.test"}, "at-c")
	poll(t, "relay-c to bounce carol from the shared list", 60*time.Second, func() bool {
		return metric(t, c, "mailroom_delivery_suppressed_total") == 1
	})
	if n := rcptAttempts(sink, "carol@dest.test"); n != carol {
		t.Errorf("relay-c contacted the sink for carol")
	}
	if _, ok := suppressionsAt(t, a)["bob@dest.test"]; ok {
		t.Error("relay-c's start-up resurrected bob at relay-a")
	}
}
