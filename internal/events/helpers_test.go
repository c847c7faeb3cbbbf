package events

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/testutil/webhookverify"
)

var t0 = time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)

// post is one request the receiver got.
type post struct {
	Header http.Header
	Body   []byte
	At     time.Time
}

// receiver is a real HTTP server on loopback whose answer a test chooses.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []post
	status func(n int) int // answer to the n-th request (0-based)
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	r := &receiver{status: status}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		n := len(r.got)
		r.got = append(r.got, post{Header: req.Header.Clone(), Body: body, At: time.Now()})
		r.mu.Unlock()
		w.WriteHeader(r.status(n)) // unlocked: a status may wait
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []post {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]post(nil), r.got...)
}

func always(code int) func(int) int { return func(int) int { return code } }

func newSecret(t *testing.T) string {
	b := make([]byte, 32)
	rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// hookConfig is a configuration whose credential "shop.shop" posts its
// events of types (all when empty) to url.
func hookConfig(url, secret string, allowed []string, retention time.Duration, types ...string) *config.Config {
	return &config.Config{
		Events: config.Events{AllowedTargets: allowed, Retention: &metav1.Duration{Duration: retention}},
		Credentials: []config.Credential{
			{Username: "shop.shop", Webhook: &config.Webhook{URL: url, Secret: secret, Types: types}},
			{Username: "quiet.shop"},
		},
	}
}

type fixture struct {
	q   *queue.Queue
	d   *Dispatcher
	clk *clocktesting.FakeClock
}

func newFixture(t *testing.T, cfg *config.Config, opts Options) *fixture {
	t.Helper()
	q, err := queue.Open(t.TempDir(), queue.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(t0)
	opts.Queue, opts.Clock = q, clk
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	d, err := New(opts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Stop()
		q.Close()
	})
	return &fixture{q: q, d: d, clk: clk}
}

// submit commits a message from credential cred with evs (made by make
// for that message) written in its batch, as the intake and the
// scheduler do.
func (f *fixture) submit(t *testing.T, cred string, mk func(m *queue.Message) []Event) []Event {
	t.Helper()
	w, err := f.q.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: hi\r\n\r\nhello\r\n"))
	m := queue.Message{ID: w.ID(), From: "orders@example.com", Recipients: []queue.Recipient{{Address: "ann@example.net"}},
		Origin: "user:" + cred, MessageID: "abc@example.com", Tags: []string{"reset"}, Metadata: map[string]string{"user": "42"}}
	evs := mk(&m)
	if err := w.Commit(m, f.d.Records(evs)...); err != nil {
		t.Fatal(err)
	}
	f.d.Recorded(evs)
	return evs
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pending returns the stored events waiting for their webhook.
func (f *fixture) pending(t *testing.T) []queue.PendingEvent {
	t.Helper()
	es, _, err := f.q.DueEvents(t0.Add(1000*time.Hour), queue.PendingEvent{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// pythonVerify checks deliveries with the independent Python
// implementation (webhookverify) and returns its verdict per delivery.
func pythonVerify(t *testing.T, secret string, now time.Time, ds []post) []string {
	t.Helper()
	var posts []webhookverify.Post
	for _, d := range ds {
		posts = append(posts, webhookverify.Post{Header: d.Header, Body: d.Body})
	}
	return webhookverify.Verify(t, secret, now, posts)
}
