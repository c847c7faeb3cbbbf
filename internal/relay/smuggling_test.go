package relay_test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// rawSession is a hand-driven SMTP session over implicit TLS, for bytes no
// well-behaved client library would send.
type rawSession struct {
	t *testing.T
	c *textproto.Conn
}

func (e *testEnv) rawLoggedIn(t *testing.T) *rawSession {
	t.Helper()
	conn, err := tls.Dial("tcp", e.submissionsAddr(), e.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := &rawSession{t: t, c: textproto.NewConn(conn)}
	t.Cleanup(func() { r.c.Close() })
	r.expect(220)
	r.cmd(250, "EHLO raw.test")
	r.cmd(235, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+shopUser+"\x00"+shopPass)))
	return r
}

func (r *rawSession) cmd(code int, line string) string {
	r.t.Helper()
	if err := r.c.PrintfLine("%s", line); err != nil {
		r.t.Fatal(err)
	}
	return r.expect(code)
}

func (r *rawSession) expect(code int) string {
	r.t.Helper()
	_, msg, err := r.c.ReadResponse(code)
	if err != nil {
		r.t.Fatalf("want %d: %v", code, err)
	}
	return msg
}

func (r *rawSession) write(s string) {
	r.t.Helper()
	if _, err := r.c.W.WriteString(s); err != nil {
		r.t.Fatal(err)
	}
	if err := r.c.W.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

func TestBareLineEndingsInDataAreRefused(t *testing.T) {
	e := startRelay(t, envOptions{})
	for name, body := range map[string]string{
		"bare LF":      "line one\nline two\r\n",
		"bare CR":      "line one\rline two\r\n",
		"LF in header": "",
	} {
		t.Run(name, func(t *testing.T) {
			r := e.rawLoggedIn(t)
			r.beginData()
			hdr := "From: orders@example.com\r\nSubject: t\r\n\r\n"
			if name == "LF in header" {
				hdr = "From: orders@example.com\nSubject: t\r\n\r\nbody\r\n"
			}
			r.write(hdr + body + ".\r\n")
			msg := r.expect(550)
			if !strings.Contains(msg, "bare CR or LF") {
				t.Fatalf("reply %q", msg)
			}
			// The session goes on normally afterwards.
			r.cmd(250, "RSET")
		})
	}
	if e.q.Len() != 0 {
		t.Fatalf("%d messages with bare line endings were queued", e.q.Len())
	}
}

// TestDotStuffedLinesArriveUnstuffed: a line the client began with ".."
// is stored with one "." (RFC 5321 §4.5.2), a lone "." ends the data, and
// a command pipelined right behind the terminator is the next command.
func TestDotStuffedLinesArriveUnstuffed(t *testing.T) {
	e := startRelay(t, envOptions{})
	r := e.rawLoggedIn(t)
	r.beginData()
	r.write("From: orders@example.com\r\nSubject: dots\r\n\r\n" +
		"..\r\n...two\r\n.leading\r\nmiddle . dot\r\n.\r\nNOOP\r\n")
	id := queuedID(t, r.reply())
	r.expect(250) // NOOP's reply
	_, body := e.queued(id)
	want := "\r\n\r\n.\r\n..two\r\nleading\r\nmiddle . dot\r\n"
	if !strings.HasSuffix(body, want) {
		t.Fatalf("stored body ends %q, want %q", body[max(0, len(body)-len(want)-10):], want)
	}
}

// TestSmugglingAttemptIsNotSplitIntoTwoMessages sends the SMTP smuggling
// pattern: "<LF>.<CR><LF>" followed by a second transaction. A server that
// took the bare-LF dot as end of data would queue a forged second message.
func TestSmugglingAttemptIsNotSplitIntoTwoMessages(t *testing.T) {
	e := startRelay(t, envOptions{})
	r := e.rawLoggedIn(t)
	r.beginData()
	r.write("From: orders@example.com\r\nSubject: first\r\n\r\nhello\n.\r\n" +
		"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n" +
		"From: ceo@example.com\r\nSubject: smuggled\r\n\r\nwire money\r\n.\r\n")
	r.expect(550)
	// The next reply belongs to the next command: nothing smuggled ran.
	r.cmd(250, "NOOP")
	r.cmd(221, "QUIT")
	if e.q.Len() != 0 {
		t.Fatalf("%d messages queued from a smuggling attempt", e.q.Len())
	}
}

// TestChunkingIsPolicedLikeData: go-smtp always advertises CHUNKING, so
// BDAT must pass the same checks as DATA.
func TestChunkingIsPolicedLikeData(t *testing.T) {
	e := startRelay(t, envOptions{})
	r := e.rawLoggedIn(t)
	msg := "From: orders@example.com\r\nSubject: chunked\r\n\r\nfirst part, "
	rest := "second part\r\n"
	r.cmd(250, "MAIL FROM:<orders@example.com>")
	r.cmd(250, "RCPT TO:<x@example.net>")
	r.write(fmt.Sprintf("BDAT %d\r\n%s", len(msg), msg))
	r.expect(250)
	r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(rest), rest))
	if reply := r.expect(250); !strings.Contains(reply, "queued as") {
		t.Fatalf("BDAT LAST reply %q", reply)
	}

	bad := "From: orders@example.com\r\n\r\nbare\nLF\r\n"
	r.cmd(250, "MAIL FROM:<orders@example.com>")
	r.cmd(250, "RCPT TO:<x@example.net>")
	r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(bad), bad))
	r.expect(550)
	spoof := "From: ceo@news.example.org\r\n\r\nhi\r\n"
	r.cmd(250, "MAIL FROM:<orders@example.com>")
	r.cmd(250, "RCPT TO:<x@example.net>")
	r.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(spoof), spoof))
	r.expect(550)
	if e.q.Len() != 1 {
		t.Fatalf("%d messages queued, want only the good one", e.q.Len())
	}
	_, data := e.queued(e.q.Messages()[0].ID)
	if !strings.HasSuffix(data, "\r\n\r\nfirst part, second part\r\n") {
		t.Fatalf("chunks not joined:\n%s", data)
	}
}
