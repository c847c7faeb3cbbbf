package relay_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"mailroom.io/mailroom/internal/queue"
)

func TestMetricsCountWhatHappened(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.loggedIn(shopUser, shopPass)
	if _, err := send(c, "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", "m")); err != nil {
		t.Fatal(err)
	}
	c.Mail("spoof@evil.example", nil)
	e.dialStartTLS().Auth(sasl.NewPlainClient("", shopUser, "wrong"))

	// The queue reports its WAL fsyncs once a second (Pebble's pipeline
	// does not say which commit shared which fsync): wait for the report.
	deadline := time.Now().Add(5 * time.Second)
	for e.metric(t, "mailroom_queue_fsync_duration_seconds_count") < 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	// Pebble may sync its log for more than the one commit (a new WAL).
	if got := e.metric(t, "mailroom_queue_fsync_duration_seconds_count"); got < 1 {
		t.Errorf("mailroom_queue_fsync_duration_seconds_count = %v, want at least 1", got)
	}
	for sample, want := range map[string]float64{
		"mailroom_relay_messages_accepted_total":                       1,
		`mailroom_relay_rejected_total{reason="sender_not_allowed"}`:   1,
		`mailroom_relay_auth_failures_total{reason="bad_credentials"}`: 1,
		`mailroom_relay_sessions_total{listener="submission"}`:         2,
		"mailroom_queue_depth":                                         1,
		"mailroom_relay_accept_duration_seconds_count":                 1,
	} {
		if got := e.metric(t, sample); got != want {
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadinessFollowsDiskSpaceAndShutdown(t *testing.T) {
	e := startRelay(t, envOptions{})
	if code, body := get(t, e.http.URL+"/readyz"); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	if code, _ := get(t, e.http.URL+"/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	e.shutdown()
	// The handler stays reachable through the test server until closed;
	// ask the relay directly.
	if err := e.srv.Ready(); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("Ready after shutdown: %v", err)
	}
}

func TestNearlyFullDiskRefusesMailAndIsNotReady(t *testing.T) {
	// More free space demanded than any disk has.
	e := startRelay(t, envOptions{minFree: "1Pi"})
	code, body := get(t, e.http.URL+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "nearly full") {
		t.Fatalf("readyz %d %q", code, body)
	}
	c := e.loggedIn(shopUser, shopPass)
	wantCode(t, c.Mail("orders@example.com", nil), 452, "4.3.1")
}

// TestDiskFullDuringDataIs452AndLeavesNothing fills a real (tmpfs)
// filesystem mid-message.
func TestDiskFullDuringDataIs452AndLeavesNothing(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mounting a small tmpfs to fill (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	qdir := filepath.Join(mnt, "queue")
	e := startRelay(t, envOptions{queueDir: qdir, minFree: "0", limits: "{maxMessageSize: 32Mi}"})

	c := e.loggedIn(shopUser, shopPass)
	small, err := send(c, "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", "fits"))
	if err != nil {
		t.Fatal(err)
	}
	huge := simpleMessage("orders@example.com", "too big for the disk") + strings.Repeat(strings.Repeat("z", 76)+"\r\n", 250000)
	_, err = send(c, "orders@example.com", []string{"x@example.net"}, huge)
	wantCode(t, err, 452, "4.3.1")
	// Space is back once the failed message is gone; the session goes on.
	if _, err := send(c, "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", "after")); err != nil {
		t.Fatalf("after disk full: %v", err)
	}
	e.shutdown()

	q, err := queue.Open(qdir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if rs := q.Recovery(); rs.OrphanBodies != 0 || q.Len() != 2 {
		t.Fatalf("after disk full: %d messages, recovery %+v; want the 2 accepted and nothing half-written", q.Len(), rs)
	}
	if _, ok := q.Get(small); !ok {
		t.Fatal("the message accepted before the disk filled is gone")
	}
	if left, _ := os.ReadDir(filepath.Join(qdir, "bodies")); len(left) != 0 {
		t.Fatalf("body files left: %v", left)
	}
}

func TestConnectionLimitPerClientAddress(t *testing.T) {
	e := startRelay(t, envOptions{limits: "{maxConnectionsPerIP: 2}"})
	a, b := e.dialPlain(), e.dialPlain()
	_ = a.Noop()
	_ = b.Noop()
	if g := greeting(t, e.submissionAddr()); !strings.HasPrefix(g, "421 4.7.0") {
		t.Fatalf("third connection greeted with %q", g)
	}
	// Another address is not affected.
	c := dialFrom(t, "127.0.0.3", e.submissionAddr())
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	waitUntil(t, "the closed connection's slot", func() bool {
		return strings.HasPrefix(greeting(t, e.submissionAddr()), "220 ")
	})
}

// TestShutdownLetsTransactionsFinishAndEndsIdleSessions: a session in the
// middle of DATA completes and gets its 250; an idle one is told 421; new
// connections are refused.
func TestShutdownLetsTransactionsFinishAndEndsIdleSessions(t *testing.T) {
	e := startRelay(t, envOptions{})
	idle := e.loggedIn(shopUser, shopPass)
	busy := e.loggedIn(shopUser, shopPass)
	if err := busy.Mail("orders@example.com", nil); err != nil {
		t.Fatal(err)
	}
	busy.Rcpt("x@example.net", nil)
	w, err := busy.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, simpleMessage("orders@example.com", "in flight")[:40])

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	waitUntil(t, "listeners to close", func() bool {
		conn, err := net.DialTimeout("tcp", e.submissionAddr(), time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	// The idle session is ended (with a 421) within a few polls.
	waitUntil(t, "the idle session to be ended", func() bool { return idle.Noop() != nil })
	io.WriteString(w, simpleMessage("orders@example.com", "in flight")[40:])
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("the in-flight message was not accepted: %v", err)
	}
	if !strings.Contains(resp.StatusText, "queued as") {
		t.Fatalf("reply %q", resp.StatusText)
	}
	busy.Quit()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if e.q.Len() != 1 {
		t.Fatalf("%d messages queued", e.q.Len())
	}
}

func TestSecretsNeverReachTheLog(t *testing.T) {
	e := startRelay(t, envOptions{})
	e.loggedIn(shopUser, shopPass)
	e.dialStartTLS().Auth(sasl.NewLoginClient(shopUser, "typo-"+shopPass))
	send(e.loggedIn(shopUser, shopPass), "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", "x"))
	logs := e.logs.String()
	for _, secret := range []string{shopPass, hashOf(t, shopPass), "PRIVATE KEY"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("the log contains a secret (%.6s…)", secret)
		}
	}
	// Every accepted message is logged with its queue id.
	sc := bufio.NewScanner(strings.NewReader(logs))
	found := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "relay: accepted") && strings.Contains(sc.Text(), "queue_id=") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no accepted line with a queue id:\n%s", logs)
	}
}
