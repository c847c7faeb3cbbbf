package relay_test

import (
	"strings"
	"testing"

	"mailroom.io/mailroom/internal/queue"
)

// TestReadyzReportsQuarantinedMail: unreadable mail set aside does not
// stop intake (still ready), but /readyz says so.
func TestReadyzReportsQuarantinedMail(t *testing.T) {
	e := startRelay(t, envOptions{})
	w, err := e.q.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nhi\r\n"))
	if err := w.Commit(queue.Message{From: "orders@example.com", Recipients: []queue.Recipient{{Address: "x@example.net"}}}); err != nil {
		t.Fatal(err)
	}
	e.q.Quarantine(w.ID(), "test: unreadable")
	code, body := get(t, e.http.URL+"/readyz")
	if code != 200 || !strings.Contains(body, "warning: 1 queued messages are quarantined") {
		t.Fatalf("readyz %d %q; want ready with the quarantine reported", code, body)
	}
}
