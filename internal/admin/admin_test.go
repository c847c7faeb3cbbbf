package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/admin"
	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/scheduler"
)

// deferAll is a delivery engine whose every recipient is told "try again
// later", so messages stay in the queue for the admin API to act on.
type deferAll struct {
	mu    sync.Mutex
	calls map[string]int
}

func (d *deferAll) Deliver(_ context.Context, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	d.mu.Lock()
	d.calls[msg.ID]++
	d.mu.Unlock()
	out := make([]delivery.Result, len(rcpts))
	for i, r := range rcpts {
		out[i] = delivery.Result{Recipient: r.Address, Status: delivery.Deferred, Reason: delivery.ReasonRecipient, Code: "4.2.1",
			Reply: delivery.Reply{Code: 451, Enhanced: "4.2.1", Text: "mailbox busy"}, RemoteHost: "mx.example.org", RemoteIP: "192.0.2.25"}
	}
	return out
}

func (d *deferAll) attempts(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[id]
}

type env struct {
	t      *testing.T
	q      *queue.Queue
	s      *scheduler.Scheduler
	sup    *delivery.Suppressions
	engine *deferAll
	srv    *httptest.Server
	c      *admin.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, q: q, engine: &deferAll{calls: map[string]int{}}}
	// Retries an hour apart: a deferred message stays deferred for the
	// whole test.
	e.s, err = scheduler.New(scheduler.Options{Queue: q, Deliverer: e.engine, Hostname: "relay.test",
		Retry: delivery.RetryPolicy{Schedule: []time.Duration{time.Hour}, MaxAge: 24 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	e.sup, err = delivery.NewSuppressions(q.Suppressions(), 24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.s.Start()
	e.srv = httptest.NewServer(admin.Handler(e.s, e.sup))
	e.c = &admin.Client{Addr: strings.TrimPrefix(e.srv.URL, "http://")}
	t.Cleanup(func() {
		e.srv.Close()
		e.s.Shutdown(context.Background())
		q.Close()
	})
	return e
}

// deferred queues a message and waits until its first attempt deferred it.
func (e *env) deferred(from string, rcpts ...string) string {
	e.t.Helper()
	w, err := e.q.NewWriter()
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nSubject: admin test\r\n\r\nbody\r\n", from)
	m := queue.Message{From: from}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, queue.Recipient{Address: r})
	}
	if err := w.Commit(m); err != nil {
		e.t.Fatal(err)
	}
	id := w.ID()
	eventually(e.t, "the first attempt of "+id+" is recorded", func() bool {
		m, ok := e.q.Get(id)
		return ok && m.Attempts == 1
	})
	return id
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ids(list []scheduler.MessageInfo) string {
	var out []string
	for _, m := range list {
		out = append(out, m.ID)
	}
	return strings.Join(out, ",")
}

func TestListFiltersByStateAndDomain(t *testing.T) {
	e := newEnv(t)
	a := e.deferred("app@example.com", "x@one.example")
	b := e.deferred("app@example.com", "y@two.example", "z@one.example")
	if _, err := e.c.Act(b, "hold"); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ state, domain, want string }{
		{"", "", a + "," + b}, // oldest first
		{"deferred", "", a},
		{"held", "", b},
		{"active", "", ""},
		{"", "one.example", a + "," + b},
		{"", "@TWO.example", b},
		{"deferred", "two.example", ""},
	} {
		list, err := e.c.List(tc.state, tc.domain)
		if err != nil {
			t.Fatalf("list state=%q domain=%q: %v", tc.state, tc.domain, err)
		}
		if got := ids(list); got != tc.want {
			t.Errorf("list state=%q domain=%q = [%s], want [%s]", tc.state, tc.domain, got, tc.want)
		}
	}
	resp, err := http.Get(e.srv.URL + "/v1/messages?state=bogus")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("state=bogus: %s, want 400", resp.Status)
	}
}

func TestShowHasRecipientsAndAttemptsWithTheRemoteReply(t *testing.T) {
	e := newEnv(t)
	id := e.deferred("app@example.com", "x@one.example")
	m, err := e.c.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.State != scheduler.StateDeferred || m.Attempts != 1 || m.From != "app@example.com" {
		t.Errorf("show: state %q attempts %d from %q", m.State, m.Attempts, m.From)
	}
	if len(m.History) != 1 || m.History[0].Host != "mx.example.org" || m.History[0].IP != "192.0.2.25" ||
		m.History[0].Reply != "451 4.2.1 mailbox busy" || m.Recipients[0].LastResponse != "451 4.2.1 mailbox busy" {
		t.Errorf("show does not carry the attempt: %+v", m)
	}
	if _, err := e.c.Get("nosuchid"); err == nil || !strings.Contains(err.Error(), "no such message") {
		t.Errorf("show of an unknown id: %v", err)
	}
	resp, _ := http.Get(e.srv.URL + "/v1/messages/nosuchid")
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown id: %s, want 404", resp.Status)
	}
}

func TestRetryHoldAndRelease(t *testing.T) {
	e := newEnv(t)
	id := e.deferred("app@example.com", "x@one.example")

	m, err := e.c.Act(id, "hold")
	if err != nil || m.State != scheduler.StateHeld {
		t.Fatalf("hold: %v, state %q", err, m.State)
	}
	m, err = e.c.Act(id, "release")
	if err != nil || m.State != scheduler.StateDeferred {
		t.Fatalf("release: %v, state %q (want deferred: back on its schedule)", err, m.State)
	}
	if n := e.engine.attempts(id); n != 1 {
		t.Fatalf("release made an attempt (%d)", n)
	}
	if _, err := e.c.Act(id, "retry"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "retry makes a second attempt", func() bool { return e.engine.attempts(id) == 2 })
	if _, err := e.c.Act("nosuchid", "retry"); err == nil {
		t.Error("retry of an unknown id succeeded")
	}
}

func TestDeleteSilentlyOrWithABounce(t *testing.T) {
	e := newEnv(t)
	silent := e.deferred("app@example.com", "x@one.example")
	bounced := e.deferred("app@example.com", "y@two.example")

	if err := e.c.Delete(silent, false); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Delete(bounced, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Get(silent); err == nil {
		t.Error("the silently deleted message is still there")
	}
	if _, err := e.c.Get(bounced); err == nil {
		t.Error("the bounced message is still there")
	}
	// The only message left is the DSN for the bounced one, from <> to
	// its sender.
	var dsns []scheduler.MessageInfo
	eventually(t, "the DSN is queued", func() bool {
		list, err := e.c.List("", "")
		if err != nil {
			t.Fatal(err)
		}
		dsns = list
		return len(list) > 0
	})
	if len(dsns) != 1 || dsns[0].Origin != "dsn:"+bounced || dsns[0].From != "" || dsns[0].Recipients[0].Address != "app@example.com" {
		t.Fatalf("queue after deletes: %+v", dsns)
	}
	if err := e.c.Delete(silent, false); err == nil {
		t.Error("deleting twice succeeded")
	}
}

func TestSuppressionsListAndRemove(t *testing.T) {
	e := newEnv(t)
	if err := e.sup.Add("Gone@Example.org", "550 5.1.1 no such user", "mx.example.org", ""); err != nil {
		t.Fatal(err)
	}
	list, err := e.c.Suppressions()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Address != "gone@example.org" || list[0].Reply != "550 5.1.1 no such user" {
		t.Fatalf("suppressions: %+v", list)
	}
	if err := e.c.Unsuppress("gone@example.org"); err != nil {
		t.Fatal(err)
	}
	if list, _ := e.c.Suppressions(); len(list) != 0 {
		t.Errorf("still suppressed after removal: %+v", list)
	}
	if err := e.c.Unsuppress("gone@example.org"); err == nil || !strings.Contains(err.Error(), "not suppressed") {
		t.Errorf("removing an address that is not listed: %v", err)
	}
}

var (
	buildOnce sync.Once
	relayBin  string
	buildErr  error
)

// relayQueue runs `relay queue -admin <test server> args...` with the real
// binary, so the CLI is tested against the real API.
func (e *env) relayQueue(args ...string) (string, error) {
	e.t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "admin-test-relay-")
		if err != nil {
			buildErr = err
			return
		}
		relayBin = filepath.Join(dir, "relay")
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", relayBin, "mailroom.io/mailroom/cmd/relay").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		e.t.Fatal(buildErr)
	}
	out, err := exec.Command(relayBin, append([]string{"queue", "-admin", e.c.Addr}, args...)...).CombinedOutput()
	return string(out), err
}

func TestMain(m *testing.M) {
	code := m.Run()
	if relayBin != "" {
		os.RemoveAll(filepath.Dir(relayBin))
	}
	os.Exit(code)
}

func TestRelayQueueCommands(t *testing.T) {
	e := newEnv(t)
	keep := e.deferred("app@example.com", "x@one.example")
	silent := e.deferred("app@example.com", "y@one.example")
	bounced := e.deferred("app@example.com", "z@one.example")
	e.sup.Add("gone@example.org", "550 5.1.1 no such user", "mx.example.org", "")

	out, err := e.relayQueue("list", "-state", "deferred")
	if err != nil || !strings.Contains(out, keep) || !strings.Contains(out, "x@one.example") {
		t.Errorf("list: %v\n%s", err, out)
	}
	out, err = e.relayQueue("retry", keep)
	if err != nil || !strings.Contains(out, keep) {
		t.Errorf("retry: %v\n%s", err, out)
	}
	eventually(t, "the retried message's second attempt", func() bool { return e.engine.attempts(keep) == 2 })

	out, err = e.relayQueue("delete", silent)
	if err != nil || !strings.Contains(out, "bounce=false") {
		t.Errorf("delete: %v\n%s", err, out)
	}
	out, err = e.relayQueue("delete", "-bounce", bounced)
	if err != nil || !strings.Contains(out, "bounce=true") {
		t.Errorf("delete -bounce: %v\n%s", err, out)
	}
	eventually(t, "the bounce DSN is queued", func() bool {
		list, _ := e.c.List("", "")
		for _, m := range list {
			if m.Origin == "dsn:"+bounced {
				return true
			}
		}
		return false
	})
	list, _ := e.c.List("", "")
	for _, m := range list {
		if m.ID == silent || m.ID == bounced || m.Origin == "dsn:"+silent {
			t.Errorf("after the deletes the queue still has %s (origin %q)", m.ID, m.Origin)
		}
	}

	out, err = e.relayQueue("suppressions")
	if err != nil || !strings.Contains(out, "gone@example.org") || !strings.Contains(out, "550 5.1.1 no such user") {
		t.Errorf("suppressions: %v\n%s", err, out)
	}
	out, err = e.relayQueue("unsuppress", "gone@example.org")
	if err != nil || !strings.Contains(out, "removed") {
		t.Errorf("unsuppress: %v\n%s", err, out)
	}
	if out, err := e.relayQueue("unsuppress", "gone@example.org"); err == nil {
		t.Errorf("unsuppress of an address not listed exited 0:\n%s", out)
	}
	if out, err := e.relayQueue("delete", "nosuchid"); err == nil || !strings.Contains(out, "no such message") {
		t.Errorf("delete of an unknown id: %v\n%s", err, out)
	}
}
