package relay_test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// Tests of how intake handles bad input: each invalid input in its own
// case, each answered with the reply RFC 5321 (and its extensions) asks
// for, and nothing lost or accepted that should not be.

// rawTLS is a hand-driven session over implicit TLS, greeted and EHLOed,
// not authenticated. Replies that take longer than 10s fail the test: a
// server waiting for input that will never come is a bug here.
func (e *testEnv) rawTLS(t *testing.T) *rawSession {
	t.Helper()
	conn, err := tls.Dial("tcp", e.submissionsAddr(), e.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawSession{t: t, c: textproto.NewConn(conn)}
	t.Cleanup(func() { r.c.Close() })
	r.expect(220)
	r.cmd(250, "EHLO raw.test")
	return r
}

// rawPlain is a hand-driven session on the STARTTLS port, in plaintext,
// greeted and EHLOed.
func (e *testEnv) rawPlain(t *testing.T) (*rawSession, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", e.submissionAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawSession{t: t, c: textproto.NewConn(conn)}
	r.expect(220)
	r.cmd(250, "EHLO raw.test")
	return r, conn
}

// startData logs in and opens a transaction up to the 354.
func (r *rawSession) startData() {
	r.t.Helper()
	r.login()
	r.beginData()
}

// beginData opens a transaction of a logged-in session up to the 354.
func (r *rawSession) beginData() {
	r.t.Helper()
	r.cmd(250, "MAIL FROM:<orders@example.com>")
	r.cmd(250, "RCPT TO:<x@example.net>")
	r.cmd(354, "DATA")
}

// queuedID is the queue id in a 250 reply.
func queuedID(t *testing.T, reply string) string {
	t.Helper()
	m := regexp.MustCompile(`^250 2\.0\.0 OK: queued as (\w+)$`).FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("reply %q, want 250 … queued as", reply)
	}
	return m[1]
}

func (r *rawSession) login() {
	r.t.Helper()
	r.cmd(235, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+shopUser+"\x00"+shopPass)))
}

// reply reads one reply and returns it as "code text".
func (r *rawSession) reply() string {
	r.t.Helper()
	code, msg, err := r.c.ReadResponse(0)
	if err != nil && code == 0 {
		r.t.Fatalf("reading a reply: %v", err)
	}
	return fmt.Sprintf("%d %s", code, msg)
}

// send writes a line as it is (no CRLF added) and returns the reply.
func (r *rawSession) send(line string) string {
	r.t.Helper()
	r.write(line)
	return r.reply()
}

func wantReply(t *testing.T, got, prefix string) {
	t.Helper()
	if !strings.HasPrefix(got, prefix) {
		t.Fatalf("got reply %q, want %q…", got, prefix)
	}
}

// --- AUTH throttling ---

// TestParallelGuessesGetNoMoreChecksThanTheLimit opens many connections
// from one address and has them all guess at once. However the guesses
// interleave, no more passwords are checked than limits.authFailures; the
// rest are refused without a check, and so is the right password after.
func TestParallelGuessesGetNoMoreChecksThanTheLimit(t *testing.T) {
	const limit, parallel = 3, 24
	// A hash at bcrypt's default cost, as generated credentials have: each
	// check takes long enough for the guesses to overlap.
	slow, err := bcrypt.GenerateFromPassword([]byte(shopPass), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	e := startRelay(t, envOptions{
		limits:      fmt.Sprintf("{authFailures: %d, authFailureWindow: 1h, maxConnectionsPerIP: 100}", limit),
		credentials: fmt.Sprintf("  - {username: %s, passwordHash: %q, allowedSenders: [example.com]}\n", shopUser, slow),
	})
	clients := make([]*smtp.Client, parallel)
	for i := range clients {
		clients[i] = e.dialImplicit()
		if err := clients[i].Hello("guesser.test"); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
		start = make(chan struct{})
	)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := c.Auth(sasl.NewPlainClient("", shopUser, fmt.Sprintf("guess-%d", i)))
			code := 0
			if se, ok := err.(*smtp.SMTPError); ok {
				code = se.Code
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if codes[535] > limit || codes[535]+codes[454] != parallel {
		t.Fatalf("replies by code %v: want at most %d password checks (535) and 454 for the rest", codes, limit)
	}
	c := e.dialImplicit()
	wantCode(t, c.Auth(sasl.NewPlainClient("", shopUser, shopPass)), 454, "4.7.0")
}

// TestAuthRefusedOnOneConnectionAfterFailuresOnOthers: the throttle is the
// client address's, not the session's.
func TestAuthRefusedOnOneConnectionAfterFailuresOnOthers(t *testing.T) {
	e := startRelay(t, envOptions{limits: "{authFailures: 2, authFailureWindow: 1h}"})
	waiting := e.dialImplicit() // open before the failures, AUTH after
	if err := waiting.Hello("early.test"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		wantCode(t, e.dialImplicit().Auth(sasl.NewPlainClient("", shopUser, "wrong")), 535, "5.7.8")
	}
	wantCode(t, waiting.Auth(sasl.NewPlainClient("", shopUser, shopPass)), 454, "4.7.0")
}

// TestUndecodableAuthDataIs501: RFC 4954 §4, in the initial response and
// in a continuation.
func TestUndecodableAuthDataIs501(t *testing.T) {
	e := startRelay(t, envOptions{})
	t.Run("initial response", func(t *testing.T) {
		r := e.rawTLS(t)
		wantReply(t, r.send("AUTH PLAIN !!not-base64!!\r\n"), "501 5.5.2")
	})
	t.Run("continuation", func(t *testing.T) {
		r := e.rawTLS(t)
		wantReply(t, r.send("AUTH LOGIN\r\n"), "334 ")
		wantReply(t, r.send("%%%\r\n"), "501 5.5.2")
	})
	t.Run("no mechanism", func(t *testing.T) {
		r := e.rawTLS(t)
		wantReply(t, r.send("AUTH\r\n"), "501 5.5.4")
	})
	// An AUTH response is data, however it looks: this one is valid
	// base64 that reads like the STARTTLS command.
	t.Run("response that looks like a command", func(t *testing.T) {
		r := e.rawTLS(t)
		wantReply(t, r.send("AUTH LOGIN\r\n"), "334 ")
		wantReply(t, r.send("STARTTLSAAAA\r\n"), "334 ")
		wantReply(t, r.send(base64.StdEncoding.EncodeToString([]byte("wrong"))+"\r\n"), "535 5.7.8")
	})
}

// --- envelope addresses ---

func TestInvalidEnvelopeAddressesAreRefusedAtMailAndRcpt(t *testing.T) {
	e := startRelay(t, envOptions{})
	for _, tc := range []struct {
		name, mail, rcpt, want string
	}{
		{"sender with a second @", "MAIL FROM:<orders@evil@example.com>", "", "553 5.1.7"},
		{"sender with NUL", "MAIL FROM:<ord\x00ers@example.com>", "", "553 5.1.7"},
		{"sender with CR", "MAIL FROM:<ord\rers@example.com>", "", "553 5.1.7"},
		// The LF ends the command; the rest is a second, bad one.
		{"sender with LF", "MAIL FROM:<ord\ners@example.com>", "", "501 5.5.2"},
		{"sender with NUL in a quoted local part", "MAIL FROM:<\"ord\x00ers\"@example.com>", "", "553 5.1.7"},
		{"sender not ASCII without SMTPUTF8", "MAIL FROM:<bestellung-ö@example.com>", "", "553 5.6.7"},
		{"sender not UTF-8 with SMTPUTF8", "MAIL FROM:<best\xffellung@example.com> SMTPUTF8", "", "553 5.1.7"},
		{"sender domain with an underscore", "MAIL FROM:<orders@ex_ample.com>", "", "553 5.1.7"},
		{"sender local part of 65 octets", "MAIL FROM:<" + strings.Repeat("a", 65) + "@example.com>", "", "553 5.1.7"},
		{"recipient with a second @", "", "RCPT TO:<victim@evil.example@example.net>", "553 5.1.3"},
		{"recipient with NUL", "", "RCPT TO:<cust\x00omer@example.net>", "553 5.1.3"},
		{"recipient with CR", "", "RCPT TO:<cust\romer@example.net>", "553 5.1.3"},
		{"recipient not ASCII without SMTPUTF8", "", "RCPT TO:<jörg@example.net>", "553 5.6.7"},
		{"recipient not UTF-8 with SMTPUTF8", "MAIL FROM:<orders@example.com> SMTPUTF8", "RCPT TO:<j\xc3rg@example.net>", "553 5.1.3"},
		{"recipient domain literal", "", "RCPT TO:<customer@[192.0.2.1]>", "553 5.1.3"},
		{"recipient domain with an empty label", "", "RCPT TO:<customer@example..net>", "553 5.1.3"},
		{"recipient domain ending in a hyphen", "", "RCPT TO:<customer@example-.net>", "553 5.1.3"},
		{"recipient without a domain", "", "RCPT TO:<customer>", "501 5.5.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.rawTLS(t)
			r.login()
			if tc.rcpt == "" {
				wantReply(t, r.send(tc.mail+"\r\n"), tc.want)
				if strings.Contains(tc.mail, "\n") {
					wantReply(t, r.reply(), "501 5.5.2")
				}
				// Nothing was started: RCPT is out of sequence.
				wantReply(t, r.send("RCPT TO:<x@example.net>\r\n"), "503 5.5.1")
				return
			}
			mail := tc.mail
			if mail == "" {
				mail = "MAIL FROM:<orders@example.com>"
			}
			wantReply(t, r.send(mail+"\r\n"), "250 ")
			wantReply(t, r.send(tc.rcpt+"\r\n"), tc.want)
		})
	}
	if n := e.q.Len(); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// TestQuotedLocalPartsReachTheQueueQuoted: the local part is stored as
// RFC 5321 §4.1.2 writes it, quoted exactly when it must be, so the next
// hop gets the same mailbox.
func TestQuotedLocalPartsReachTheQueueQuoted(t *testing.T) {
	e := startRelay(t, envOptions{})
	for _, tc := range []struct{ from, rcpt, wantFrom, wantRcpt string }{
		{`<"orders desk"@example.com>`, `<"john doe"@example.net>`, `"orders desk"@example.com`, `"john doe"@example.net`},
		{`<orders@example.com>`, `<"a@b"@example.net>`, `orders@example.com`, `"a@b"@example.net`},
		{`<orders@example.com>`, `<"quote\"and\\backslash"@example.net>`, `orders@example.com`, `"quote\"and\\backslash"@example.net`},
		{`<"orders"@example.com>`, `<"plain"@example.net>`, `orders@example.com`, `plain@example.net`},
	} {
		t.Run(tc.rcpt, func(t *testing.T) {
			r := e.rawTLS(t)
			r.login()
			wantReply(t, r.send("MAIL FROM:"+tc.from+"\r\n"), "250 ")
			wantReply(t, r.send("RCPT TO:"+tc.rcpt+"\r\n"), "250 ")
			wantReply(t, r.send("DATA\r\n"), "354 ")
			msg, _ := e.queued(queuedID(t, r.send("From: orders@example.com\r\nSubject: quoted\r\n\r\nhi\r\n.\r\n")))
			if msg.From != tc.wantFrom || msg.Recipients[0].Address != tc.wantRcpt {
				t.Fatalf("queued from %s to %s, want %s to %s", msg.From, msg.Recipients[0].Address, tc.wantFrom, tc.wantRcpt)
			}
		})
	}
}

// --- Sender: ---

func TestSenderHeaderIsHeldToTheAllowedSenders(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.loggedIn(shopUser, shopPass)
	withSender := func(sender string) string {
		return strings.Replace(simpleMessage("orders@example.com", "s"), "To: ", sender+"\r\nTo: ", 1)
	}
	t.Run("outside the allowed senders", func(t *testing.T) {
		_, err := send(c, "orders@example.com", []string{"x@example.net"}, withSender("Sender: Boss <boss@evil.example>"))
		se := wantCode(t, err, 550, "5.7.1")
		if !strings.Contains(se.Message, "Sender: header address <boss@evil.example>") {
			t.Fatalf("reply %q", se.Message)
		}
	})
	t.Run("outside the allowed senders, from swaks", func(t *testing.T) {
		out, err := swaks(t, e, "--server", e.submissionAddr(), "--tls", "--auth", "PLAIN", "--auth-user", shopUser,
			"--auth-password", shopPass, "--add-header", "Sender: boss@evil.example")
		if err == nil || !strings.Contains(out, "<~* 550 5.7.1 Sender: header address <boss@evil.example> is not allowed") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	})
	t.Run("two Sender fields", func(t *testing.T) {
		_, err := send(c, "orders@example.com", []string{"x@example.net"}, withSender("Sender: a@example.com\r\nSender: b@example.com"))
		wantCode(t, err, 550, "5.6.0")
	})
	t.Run("not an address", func(t *testing.T) {
		_, err := send(c, "orders@example.com", []string{"x@example.net"}, withSender("Sender: a@example.com, b@example.com"))
		wantCode(t, err, 550, "5.6.0")
	})
	t.Run("allowed", func(t *testing.T) {
		if _, err := send(c, "orders@example.com", []string{"x@example.net"}, withSender("Sender: Desk <desk@example.com>")); err != nil {
			t.Fatal(err)
		}
	})
	if e.q.Len() != 1 {
		t.Fatalf("%d messages queued, want only the allowed one", e.q.Len())
	}
}

// --- long lines ---

func TestLongLinesArePermanentErrors(t *testing.T) {
	e := startRelay(t, envOptions{})
	body := func(n int) string {
		return "From: orders@example.com\r\nSubject: long\r\n\r\n" + strings.Repeat("x", n) + "\r\nend\r\n"
	}
	t.Run("998 octets", func(t *testing.T) {
		c := e.loggedIn(shopUser, shopPass)
		if _, err := send(c, "orders@example.com", []string{"x@example.net"}, body(998)); err != nil {
			t.Fatal(err)
		}
	})
	for _, n := range []int{999, 2500, 100_000} {
		t.Run(fmt.Sprintf("%d octets in DATA", n), func(t *testing.T) {
			r := e.rawTLS(t)
			r.startData()
			wantReply(t, r.send(body(n)+".\r\n"), "552 5.6.0")
			// Permanent, and the session goes on.
			r.cmd(250, "NOOP")
		})
	}
	t.Run("in a header field", func(t *testing.T) {
		r := e.rawTLS(t)
		r.startData()
		wantReply(t, r.send("From: orders@example.com\r\nSubject: "+strings.Repeat("y", 3000)+"\r\n\r\nbody\r\n.\r\n"), "552 5.6.0")
	})
	t.Run("in BDAT", func(t *testing.T) {
		r := e.rawTLS(t)
		r.login()
		r.cmd(250, "MAIL FROM:<orders@example.com>")
		r.cmd(250, "RCPT TO:<x@example.net>")
		msg := body(5000)
		wantReply(t, r.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg)), "552 5.6.0")
		r.cmd(250, "NOOP")
	})
	t.Run("smtplib", func(t *testing.T) {
		py := systemPython(t)
		host, port, _ := net.SplitHostPort(e.submissionAddr())
		script := `
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.starttls(context=ctx)
s.login(sys.argv[4], sys.argv[5])
try:
    s.sendmail("orders@example.com", ["x@example.net"], "From: orders@example.com\r\n\r\n" + "z" * 1500 + "\r\n")
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
`
		out, err := exec.Command(py, "-c", script, host, port, filepath.Join(e.dir, "tls.crt"), shopUser, shopPass).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "552 5.6.0") {
			t.Fatalf("smtplib: %v\n%s", err, out)
		}
	})
	if e.q.Len() != 1 {
		t.Fatalf("%d messages queued, want only the 998-octet one", e.q.Len())
	}
}

// --- the DATA terminator and bare CR ---

// TestBareCRNextToTheTerminatorIsRefused: "." CR at the start of a line
// without LF is a bare CR like any other; and a bare CR right before CRLF
// does not hide the terminator (go-smtp's own reader waited forever).
func TestBareCRNextToTheTerminatorIsRefused(t *testing.T) {
	e := startRelay(t, envOptions{})
	for name, data := range map[string]string{
		`CRLF "." CR then text`:     "hello\r\n.\rsmuggled\r\n.\r\n",
		`CRLF "." CR CR LF`:         "hello\r\n.\r\r\n.\r\n",
		"CR CR LF before the end":   "hello\r\r\n.\r\n",
		"CR at the start of a line": "hello\r\n\rworld\r\n.\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			r := e.rawTLS(t)
			r.startData()
			got := r.send("From: orders@example.com\r\nSubject: t\r\n\r\n" + data)
			wantReply(t, got, "550 5.6.0")
			if !strings.Contains(got, "bare CR or LF") {
				t.Fatalf("reply %q", got)
			}
			// In step: the next reply is the next command's.
			r.cmd(250, "NOOP")
		})
	}
	if e.q.Len() != 0 {
		t.Fatalf("%d messages queued", e.q.Len())
	}
}

// TestDotStuffingStillWorks: lines starting with "." are unstuffed and a
// lone "." line inside the message (sent as "..") is content.
func TestDotStuffingStillWorks(t *testing.T) {
	e := startRelay(t, envOptions{})
	r := e.rawTLS(t)
	r.startData()
	_, data := e.queued(queuedID(t, r.send("From: orders@example.com\r\nSubject: dots\r\n\r\n..\r\n..leading\r\n.\r\n")))
	if !strings.HasSuffix(data, "\r\n\r\n.\r\n.leading\r\n") {
		t.Fatalf("body not unstuffed:\n%q", data)
	}
}

// --- STARTTLS ---

// TestPlaintextPipelinedAfterSTARTTLSIsNotRead: commands sent with
// STARTTLS, before the handshake, must not run as if sent over TLS.
func TestPlaintextPipelinedAfterSTARTTLSIsNotRead(t *testing.T) {
	e := startRelay(t, envOptions{})
	r, _ := e.rawPlain(t)
	wantReply(t, r.send("STARTTLS\r\nAUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+shopUser+"\x00"+shopPass))+"\r\n"), "554 5.5.0")
	if _, err := r.c.ReadLine(); err != io.EOF {
		t.Fatalf("connection not closed: %v", err)
	}
}

// TestSTARTTLSStartsAFreshSession: after the handshake the client must
// EHLO again (RFC 3207 §4.2), and STARTTLS is not offered twice.
func TestSTARTTLSStartsAFreshSession(t *testing.T) {
	e := startRelay(t, envOptions{})
	pr, conn := e.rawPlain(t)
	pr.cmd(220, "STARTTLS")
	tc := tls.Client(conn, e.tlsConfig())
	r := &rawSession{t: t, c: textproto.NewConn(tc)}
	wantReply(t, r.send("MAIL FROM:<orders@example.com>\r\n"), "503 5.5.1")
	ehlo := r.cmd(250, "EHLO raw.test")
	if strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH PLAIN") {
		t.Fatalf("EHLO after TLS:\n%s", ehlo)
	}
	wantReply(t, r.send("STARTTLS\r\n"), "502 5.5.1")
	r.login()
}

// --- sequence ---

func TestOutOfSequenceCommandsAre503(t *testing.T) {
	e := startRelay(t, envOptions{})
	for _, tc := range []struct{ name, mail, cmd string }{
		{"RCPT before MAIL", "", "RCPT TO:<x@example.net>\r\n"},
		{"DATA before MAIL", "", "DATA\r\n"},
		{"DATA before RCPT", "MAIL FROM:<orders@example.com>", "DATA\r\n"},
		{"BDAT before RCPT", "MAIL FROM:<orders@example.com>", "BDAT 4 LAST\r\nabcd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.rawTLS(t)
			r.login()
			if tc.mail != "" {
				r.cmd(250, tc.mail)
			}
			wantReply(t, r.send(tc.cmd), "503 5.5.1")
			r.cmd(250, "NOOP")
		})
	}
	t.Run("AUTH inside a transaction", func(t *testing.T) {
		e2 := startRelay(t, envOptions{extra: "trustedNetworks: [{name: legacy, cidrs: [127.0.0.2/32], allowedSenders: [example.com]}]\n"})
		conn, err := tls.DialWithDialer(netDialer("127.0.0.2"), "tcp", e2.submissionsAddr(), e2.tlsConfig())
		if err != nil {
			t.Fatal(err)
		}
		c := smtp.NewClient(conn)
		defer c.Close()
		if err := c.Mail("orders@example.com", nil); err != nil {
			t.Fatal(err)
		}
		wantCode(t, c.Auth(sasl.NewPlainClient("", shopUser, shopPass)), 503, "5.5.1")
	})
	t.Run("MAIL before EHLO", func(t *testing.T) {
		conn, err := tls.Dial("tcp", e.submissionsAddr(), e.tlsConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		r := &rawSession{t: t, c: textproto.NewConn(conn)}
		r.expect(220)
		wantReply(t, r.send("MAIL FROM:<orders@example.com>\r\n"), "503 5.5.1")
	})
	t.Run("go-smtp client", func(t *testing.T) {
		c := e.loggedIn(shopUser, shopPass)
		wantCode(t, c.Rcpt("x@example.net", nil), 503, "5.5.1")
	})
}

// --- logs ---

// TestRefusalsCannotFloodTheLog: 1,000 refused RCPTs in one session are
// counted one by one but logged as a few lines and one summary.
func TestRefusalsCannotFloodTheLog(t *testing.T) {
	e := startRelay(t, envOptions{limits: "{maxRecipients: 5000}"})
	r := e.rawTLS(t)
	r.login()
	r.cmd(250, "MAIL FROM:<orders@example.com>")
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "RCPT TO:<bad%d@exa_mple.net>\r\n", i)
	}
	r.write(b.String())
	for i := 0; i < 1000; i++ {
		r.expect(553)
	}
	r.cmd(221, "QUIT")
	waitUntil(t, "the summary line", func() bool { return strings.Contains(e.logs.String(), "further refusals") })
	logs := e.logs.String()
	if n := strings.Count(logs, "relay: rejected"); n > 10 {
		t.Fatalf("%d refusal lines logged for one session", n)
	}
	if !strings.Contains(logs, "count=990") || !strings.Contains(logs, "reasons.bad_recipient=990") {
		t.Fatalf("no summary of the other 990:\n%s", logs)
	}
	if got := e.metric(t, `mailroom_relay_rejected_total{reason="bad_recipient"}`); got != 1000 {
		t.Fatalf("rejected metric %v, want 1000", got)
	}
}

// --- Received ---

func TestReceivedNamesUTF8SMTPForSMTPUTF8Sessions(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.loggedIn(shopUser, shopPass)
	if err := c.Mail("orders@example.com", &smtp.MailOptions{UTF8: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("jörg@example.net", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, simpleMessage("orders@example.com", "utf8"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, data := e.queued(e.q.Messages()[0].ID)
	if !strings.Contains(data, " with UTF8SMTPSA id ") {
		t.Fatalf("trace field:\n%s", data[:strings.Index(data, "\r\nFrom:")])
	}
}
