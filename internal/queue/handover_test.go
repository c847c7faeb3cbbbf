package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"
)

func TestHandoverExportImportRemove(t *testing.T) {
	src := openQueue(t, t.TempDir(), Options{InlineLimit: 16 << 10})
	defer src.Close()
	dst := openQueue(t, t.TempDir(), Options{InlineLimit: 16 << 10})
	defer dst.Close()

	small := message(3000, "small")
	large := message(200<<10, "large") // spilled to its own file
	ids := []string{enqueue(t, src, small, "a@example.net", "b@example.net"), enqueue(t, src, large, "c@example.net")}
	received := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	m, _ := src.Get(ids[0])
	m.ReceivedAt, m.Attempts, m.DelayWarned = received, 3, true
	m.NextAttempt = received.Add(time.Hour)
	m.Expires = received.Add(120 * time.Hour)
	m.Recipients[0].State, m.Recipients[1].Attempts = "delivered", 3
	m.Recipients[1].Notify, m.Recipients[1].OriginalRecipient = []string{"FAILURE", "DELAY"}, "rfc822;b@example.net"
	m.EnvelopeID, m.Return = "env-1", "HDRS"
	if err := src.Update(m); err != nil {
		t.Fatal(err)
	}

	// The drainer pages through every id.
	var listed []string
	for after := ""; ; {
		page, err := src.IDs(after, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		listed = append(listed, page...)
		after = page[len(page)-1]
	}
	if len(listed) != 2 {
		t.Fatalf("IDs paged %v, want both messages", listed)
	}

	for _, id := range listed {
		e, body, err := src.Export(id)
		if err != nil {
			t.Fatal(err)
		}
		// Exported travels as JSON.
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var got Exported
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(body)
		body.Close()
		key := "relay-0/" + id
		newID, dup, err := dst.Import(context.Background(), got, bytes.NewReader(data), key)
		if err != nil || dup {
			t.Fatalf("Import: %v, dup %v", err, dup)
		}
		// A retry after a crash before the sender's Remove queues nothing.
		again, dup, err := dst.Import(context.Background(), got, bytes.NewReader(data), key)
		if err != nil || !dup || again != newID {
			t.Fatalf("second Import: id %s dup %v err %v, want %s dup", again, dup, err, newID)
		}
		if err := src.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	if src.Len() != 0 || dst.Len() != 2 {
		t.Fatalf("after handover: source %d, destination %d messages", src.Len(), dst.Len())
	}
	for _, qm := range dst.Messages() {
		body := readAll(t, dst, qm.ID)
		switch {
		case bytes.HasSuffix(body, small):
			if qm.Attempts != 3 || !qm.DelayWarned || !qm.ReceivedAt.Equal(received) || !qm.Expires.Equal(received.Add(120*time.Hour)) ||
				!qm.NextAttempt.Equal(received.Add(time.Hour)) || qm.Recipients[0].State != "delivered" ||
				qm.Recipients[1].Attempts != 3 || len(qm.Recipients[1].Notify) != 2 || qm.EnvelopeID != "env-1" || qm.Return != "HDRS" {
				t.Fatalf("state not carried over: %+v", qm)
			}
		case bytes.HasSuffix(body, large):
		default:
			t.Fatalf("message %s has the wrong bytes", qm.ID)
		}
		if !bytes.HasPrefix(body, []byte("DKIM-Signature: v=1\r\n")) {
			t.Fatalf("header not carried over")
		}
	}
}

func TestImportRefusesABodyOfTheWrongSize(t *testing.T) {
	q := openQueue(t, t.TempDir(), Options{})
	defer q.Close()
	e := Exported{Format: ExportFormat, BodySize: 10, Message: Message{From: "a@example.com", Size: 10,
		Recipients: []Recipient{{Address: "b@example.net"}}}}
	if _, _, err := q.Import(context.Background(), e, bytes.NewReader([]byte("short")), "k1"); !errors.Is(err, ErrBadExport) {
		t.Fatalf("short body: %v, want ErrBadExport", err)
	}
	if _, _, err := q.Import(context.Background(), e, bytes.NewReader(make([]byte, 11)), "k2"); !errors.Is(err, ErrBadExport) {
		t.Fatalf("long body: %v, want ErrBadExport", err)
	}
	if q.Len() != 0 {
		t.Fatalf("a refused Import queued %d messages", q.Len())
	}
}
