package main_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/relay/password"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
	"mailroom.io/mailroom/internal/testutil/webhookverify"
)

// hookEvent is the part of a webhook body the tests check.
type hookEvent struct {
	ID             string            `json:"id"`
	Type           string            `json:"type"`
	QueueID        string            `json:"queueId"`
	MessageID      string            `json:"messageId"`
	Recipient      string            `json:"recipient"`
	EnhancedStatus string            `json:"enhancedStatus"`
	Reply          string            `json:"reply"`
	RemoteMTA      string            `json:"remoteMta"`
	Attempt        int               `json:"attempt"`
	BounceType     string            `json:"bounceType"`
	BounceClass    string            `json:"bounceClass"`
	Credential     string            `json:"credential"`
	Metadata       map[string]string `json:"metadata"`
}

type hookPost struct {
	header http.Header
	body   []byte
	event  hookEvent
}

// hookReceiver is the app's webhook endpoint: a real HTTP server whose
// answer the test switches (503 while "down").
type hookReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	status int
	posts  []hookPost
}

func newHookReceiver(t *testing.T, status int) *hookReceiver {
	r := &hookReceiver{status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var e hookEvent
		json.Unmarshal(body, &e)
		r.mu.Lock()
		r.posts = append(r.posts, hookPost{header: req.Header.Clone(), body: body, event: e})
		st := r.status
		r.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) setStatus(s int) { r.mu.Lock(); r.status = s; r.mu.Unlock() }

func (r *hookReceiver) all() []hookPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookPost(nil), r.posts...)
}

// byType returns the distinct events of type typ (for rcpt, or any)
// received, first post of each.
func (r *hookReceiver) byType(typ, rcpt string) []hookEvent {
	var out []hookEvent
	seen := map[string]bool{}
	for _, p := range r.all() {
		if p.event.Type == typ && (rcpt == "" || p.event.Recipient == rcpt) && !seen[p.event.ID] {
			seen[p.event.ID] = true
			out = append(out, p.event)
		}
	}
	return out
}

const hookUser, hookPass = "shop.shop", "correct horse battery staple"

// eventsRelay is a relay delivering through w with credential shop.shop
// whose events go to rcv.
func eventsRelay(t *testing.T, w *world, rcv *hookReceiver, retry string) (*relayProc, string) {
	t.Helper()
	hash, err := password.Hash(hookPass)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	extra := fmt.Sprintf(`credentials:
  - {username: %s, passwordHash: %q, allowedSenders: [example.com], webhook: {url: %q, secret: %q}}
events: {allowedTargets: [127.0.0.1/32]}
`, hookUser, hash, rcv.srv.URL+"/hooks", secret)
	d := fmt.Sprintf("{resolvers: [%q], mxPort: %d, retry: %s}", w.DNS.Addr, w.Port, retry)
	return newRelayWithDelivery(t, d, extra), secret
}

// submitAuth sends one message as the credential over STARTTLS and AUTH
// PLAIN and returns its queue id.
func submitAuth(t *testing.T, p *relayProc, to []string, testID string) string {
	t.Helper()
	// The relay's certificate is the test's own self-signed one.
	c, err := smtp.DialStartTLS(p.smtpAddr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", hookUser, hookPass)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail("orders@example.com", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(wc, "From: <orders@example.com>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@shop.test>\r\nX-Test-ID: %s\r\n\r\nHello.\r\n", to[0], testID, testID, testID)
	resp, err := wc.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	_, qid, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		t.Fatalf("reply %q", resp.StatusText)
	}
	c.Quit()
	return qid
}

// verifyPosts checks every post's signature with the independent Python
// implementation.
func verifyPosts(t *testing.T, secret string, posts []hookPost) {
	t.Helper()
	var ps []webhookverify.Post
	for _, p := range posts {
		ps = append(ps, webhookverify.Post{Header: p.header, Body: p.body})
	}
	for i, v := range webhookverify.Verify(t, secret, time.Now(), ps) {
		if v != "ok" {
			t.Fatalf("post %d (%s %s): python says %q", i, posts[i].event.Type, posts[i].event.ID, v)
		}
	}
}

func TestWebhookEventsForDeliveredDeferredBouncedAndExpiredMail(t *testing.T) {
	w := newWorld(t, "127.77.9.1")
	w.mx("example.net", 10, "mx.example.net", "127.77.9.1")
	w.sink("127.77.9.1", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"later@example.net": {Reply: smtpsink.Reply(451, "4.2.1", "mailbox busy, try later"), Times: 1},
		"gone@example.net":  {Reply: smtpsink.Reply(550, "5.1.1", "no such user here")},
		"stuck@example.net": {Reply: smtpsink.Reply(451, "4.3.0", "temporary local problem")},
	}}})
	rcv := newHookReceiver(t, 200)
	p, secret := eventsRelay(t, w, rcv, "{schedule: [1s], maxAge: 4s, delayWarningAfter: 0s}")
	p.start()
	qid := submitAuth(t, p, []string{"ok@example.net", "later@example.net", "gone@example.net", "stuck@example.net"}, "ev1")

	poll(t, "delivered, bounced and expired events", 60*time.Second, func() bool {
		return len(rcv.byType("delivered", "")) == 2 && len(rcv.byType("bounced", "")) == 1 && len(rcv.byType("expired", "")) == 1
	})
	if n := len(rcv.byType("queued", "")); n != 4 {
		t.Fatalf("%d queued events, want one per recipient", n)
	}
	for _, e := range append(rcv.byType("queued", ""), rcv.byType("delivered", "")...) {
		if e.QueueID != qid || e.MessageID != "ev1@shop.test" || e.Credential != hookUser {
			t.Fatalf("event without its message's fields: %+v", e)
		}
	}
	d := rcv.byType("delivered", "ok@example.net")
	if len(d) != 1 || d[0].EnhancedStatus[:2] != "2." || !strings.HasPrefix(d[0].Reply, "250") || d[0].RemoteMTA != "mx.example.net" || d[0].Attempt != 1 {
		t.Fatalf("delivered event: %+v", d)
	}
	df := rcv.byType("deferred", "later@example.net")
	if len(df) != 1 || df[0].EnhancedStatus != "4.2.1" || !strings.Contains(df[0].Reply, "451 4.2.1 mailbox busy") {
		t.Fatalf("deferred event of later@: %+v", df)
	}
	if d := rcv.byType("delivered", "later@example.net"); len(d) != 1 || d[0].Attempt != 2 {
		t.Fatalf("later@ delivered on its second attempt: %+v", d)
	}
	b := rcv.byType("bounced", "gone@example.net")
	if len(b) != 1 || b[0].EnhancedStatus != "5.1.1" || b[0].BounceType != "hard" || b[0].BounceClass != "invalid_recipient" || !strings.Contains(b[0].Reply, "550 5.1.1 no such user here") {
		t.Fatalf("bounced event: %+v", b)
	}
	if n := len(rcv.byType("deferred", "stuck@example.net")); n < 1 {
		t.Fatalf("no deferred event for stuck@ before it expired")
	}
	ex := rcv.byType("expired", "stuck@example.net")
	if len(ex) != 1 || ex[0].EnhancedStatus != "5.4.7" || ex[0].BounceType != "soft" || ex[0].BounceClass != "other" || !strings.Contains(ex[0].Reply, "451 4.3.0") {
		t.Fatalf("expired event: %+v", ex)
	}
	poll(t, "dsn_sent events for the bounced and the expired recipient", 20*time.Second, func() bool {
		return len(rcv.byType("dsn_sent", "gone@example.net")) == 1 && len(rcv.byType("dsn_sent", "stuck@example.net")) == 1
	})
	verifyPosts(t, secret, rcv.all())

	if n := metric(t, p, `mailroom_events_total{credential="shop.shop",type="delivered"}`); n != 2 {
		t.Fatalf("mailroom_events_total{delivered} = %v, want 2", n)
	}
	out, err := exec.Command(relayBinary(t), "queue", "-admin", p.adminAddr, "-json", "events", "--credential", hookUser, "--type", "bounced").CombinedOutput()
	if err != nil {
		t.Fatalf("relay queue events: %v\n%s", err, out)
	}
	var listed []hookEvent
	if err := json.Unmarshal(out, &listed); err != nil || len(listed) != 1 || listed[0].ID != b[0].ID {
		t.Fatalf("relay queue events --type bounced: %v\n%s", err, out)
	}
	if out, err := exec.Command(relayBinary(t), "queue", "-admin", p.adminAddr, "events", "--type", "nonsense").CombinedOutput(); err == nil || !strings.Contains(string(out), "type must be one of") {
		t.Fatalf("an unknown type was not refused: %v\n%s", err, out)
	}
}

func TestWebhookEventsSurviveAReceiverOutageAndKill9(t *testing.T) {
	w := newWorld(t, "127.77.9.2")
	w.mx("example.net", 10, "mx.example.net", "127.77.9.2")
	w.sink("127.77.9.2", smtpsink.Options{})
	rcv := newHookReceiver(t, 503) // the app is down
	p, secret := eventsRelay(t, w, rcv, "{schedule: [1s], maxAge: 1h}")
	p.start()
	for i := range 3 {
		submitAuth(t, p, []string{fmt.Sprintf("r%d@example.net", i)}, fmt.Sprintf("k%d", i))
	}
	// Every message delivered (queued + delivered per message), each
	// event refused at least once and pending.
	type listed struct {
		ID, Type, Credential string
	}
	var want []listed
	poll(t, "6 events listed and refused by the receiver", 30*time.Second, func() bool {
		want = nil
		adminJSON(t, p, "GET", "/v1/events?credential="+hookUser, &want)
		refused := map[string]bool{}
		for _, pp := range rcv.all() {
			refused[pp.event.ID] = true
		}
		return len(want) == 6 && len(refused) == 6 && metric(t, p, "mailroom_webhook_pending") == 6
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait()
	rcv.setStatus(204) // the app is back
	p.start()
	poll(t, "every event id accepted after the restart", 60*time.Second, func() bool {
		return metric(t, p, "mailroom_webhook_pending") == 0
	})
	bodies := map[string][]byte{}
	for _, pp := range rcv.all() {
		id := pp.header.Get("webhook-id")
		if id != pp.event.ID {
			t.Fatalf("webhook-id %q for event %q", id, pp.event.ID)
		}
		if b, ok := bodies[id]; ok && !bytes.Equal(b, pp.body) {
			t.Fatalf("event %s sent twice with different bodies:\n%s\n%s", id, b, pp.body)
		}
		bodies[id] = pp.body
	}
	for _, e := range want {
		if _, ok := bodies[e.ID]; !ok {
			t.Fatalf("event %s (%s) lost across the kill", e.ID, e.Type)
		}
	}
	if len(bodies) != 6 {
		t.Fatalf("%d distinct event ids posted, want 6", len(bodies))
	}
	verifyPosts(t, secret, rcv.all())
}
