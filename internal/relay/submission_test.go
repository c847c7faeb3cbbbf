package relay_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/queue"
)

// TestGoClientSubmitsWithPlainAndLoginOverBothTLSModes: the go-smtp client,
// AUTH PLAIN and LOGIN, on 587 after STARTTLS and on 465.
func TestGoClientSubmitsWithPlainAndLoginOverBothTLSModes(t *testing.T) {
	e := startRelay(t, envOptions{})
	for _, tc := range []struct {
		name string
		dial func() *smtp.Client
		auth sasl.Client
	}{
		{"starttls/plain", e.dialStartTLS, sasl.NewPlainClient("", shopUser, shopPass)},
		{"starttls/login", e.dialStartTLS, sasl.NewLoginClient(shopUser, shopPass)},
		{"implicit/plain", e.dialImplicit, sasl.NewPlainClient("", shopUser, shopPass)},
		{"implicit/login", e.dialImplicit, sasl.NewLoginClient(shopUser, shopPass)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.dial()
			if ok, _ := c.Extension("AUTH"); !ok {
				t.Fatal("AUTH not advertised over TLS")
			}
			if err := c.Auth(tc.auth); err != nil {
				t.Fatalf("AUTH: %v", err)
			}
			id, err := send(c, "orders@example.com", []string{"customer@example.net"}, simpleMessage("orders@example.com", tc.name))
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			m, data := e.queued(id)
			if m.From != "orders@example.com" || len(m.Recipients) != 1 || m.Recipients[0].Address != "customer@example.net" || m.Origin != "user:"+shopUser {
				t.Fatalf("queued envelope: %+v", m)
			}
			for _, want := range []string{"DKIM-Signature: ", "Received: from ", "with ESMTPSA id " + id, "\r\nDate: ", "\r\nMessage-ID: <" + id} {
				if !strings.Contains(data, want) {
					t.Errorf("queued message lacks %q:\n%s", want, data)
				}
			}
			if !strings.HasPrefix(data, "DKIM-Signature: ") || strings.Index(data, "\r\nReceived:") > strings.Index(data, "\r\nFrom: ") {
				t.Errorf("want DKIM-Signature first and Received before the original fields:\n%s", data)
			}
		})
	}
}

func TestExistingDateAndMessageIDAreKept(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.loggedIn(shopUser, shopPass)
	msg := "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: <keep-me@example.com>\r\n" + simpleMessage("a@example.com", "x")
	id, err := send(c, "a@example.com", []string{"b@example.net"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	_, data := e.queued(id)
	if strings.Count(data, "\r\nMessage-ID:") != 1 || strings.Count(data, "\r\nDate:") != 1 || !strings.Contains(data, "<keep-me@example.com>") {
		t.Fatalf("Date/Message-ID duplicated or replaced:\n%s", data)
	}
}

// smtplibScript submits one message with Python's smtplib. Arguments: host
// port mode(starttls|implicit) mech(PLAIN|LOGIN|LOGIN-IR) cafile user pass.
const smtplibScript = `
import smtplib, ssl, sys
host, port, mode, mech, cafile, user, pw = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "implicit":
    s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=60)
    s.ehlo("smtplib.test")
else:
    s = smtplib.SMTP(host, int(port), timeout=60)
    s.ehlo("smtplib.test")
    s.starttls(context=ctx)
    s.ehlo("smtplib.test")
s.user, s.password = user, pw
if mech == "PLAIN":
    s.auth("PLAIN", s.auth_plain)
elif mech == "LOGIN":
    s.auth("LOGIN", s.auth_login, initial_response_ok=False)
else:
    s.auth("LOGIN", s.auth_login, initial_response_ok=True)
msg = "From: App <app@example.com>\r\nTo: c@example.net\r\nSubject: smtplib " + mech + "\r\n\r\nbody\r\n"
code, resp = s.docmd("MAIL", "FROM:<app@example.com>")
assert code == 250, (code, resp)
code, resp = s.docmd("RCPT", "TO:<c@example.net>")
assert code == 250, (code, resp)
code, resp = s.data(msg.encode())
print(code, resp.decode())
s.quit()
`

func TestPythonSmtplibSubmits(t *testing.T) {
	py := systemPython(t)
	e := startRelay(t, envOptions{})
	script := filepath.Join(e.dir, "submit.py")
	os.WriteFile(script, []byte(smtplibScript), 0o600)
	for _, mode := range []string{"starttls", "implicit"} {
		for _, mech := range []string{"PLAIN", "LOGIN", "LOGIN-IR"} {
			t.Run(mode+"/"+mech, func(t *testing.T) {
				addr := e.submissionAddr()
				if mode == "implicit" {
					addr = e.submissionsAddr()
				}
				host, port, _ := strings.Cut(addr, ":")
				out, err := exec.Command(py, script, host, port, mode, mech, filepath.Join(e.dir, "tls.crt"), shopUser, shopPass).CombinedOutput()
				if err != nil {
					t.Fatalf("smtplib: %v\n%s", err, out)
				}
				if !regexp.MustCompile(`^250 2\.0\.0 OK: queued as \w+`).Match(out) {
					t.Fatalf("smtplib got %q", out)
				}
			})
		}
	}
	// A wrong password through the same client.
	host, port, _ := strings.Cut(e.submissionAddr(), ":")
	out, err := exec.Command(py, script, host, port, "starttls", "PLAIN", filepath.Join(e.dir, "tls.crt"), shopUser, "wrong").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "535") || !strings.Contains(string(out), "5.7.8") {
		t.Fatalf("wrong password via smtplib: err=%v\n%s", err, out)
	}
}

func swaks(t *testing.T, e *testEnv, args ...string) (string, error) {
	t.Helper()
	bin := requireTool(t, "/usr/bin/swaks")
	ensureSwaksTLS(t)
	base := []string{"--from", "app@example.com", "--to", "c@example.net", "--helo", "swaks.test",
		"--header", "From: app@example.com", "--timeout", "60"}
	out, err := exec.Command(bin, append(base, args...)...).CombinedOutput()
	return string(out), err
}

func TestSwaksSubmits(t *testing.T) {
	e := startRelay(t, envOptions{})
	for _, tc := range []struct{ name, server, tlsFlag, mech string }{
		{"starttls/plain", e.submissionAddr(), "--tls", "PLAIN"},
		{"starttls/login", e.submissionAddr(), "--tls", "LOGIN"},
		{"implicit/plain", e.submissionsAddr(), "--tlsc", "PLAIN"},
		{"implicit/login", e.submissionsAddr(), "--tlsc", "LOGIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := swaks(t, e, "--server", tc.server, tc.tlsFlag, "--auth", tc.mech,
				"--auth-user", shopUser, "--auth-password", shopPass)
			if err != nil || !strings.Contains(out, "<~  250 2.0.0 OK: queued as") {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			if !strings.Contains(out, "<~  235 2.0.0 Authentication succeeded") {
				t.Fatalf("no 235 after AUTH %s:\n%s", tc.mech, out)
			}
		})
	}
	t.Run("no TLS", func(t *testing.T) {
		out, err := swaks(t, e, "--server", e.submissionAddr(), "--auth", "PLAIN", "--auth-user", shopUser, "--auth-password", shopPass)
		if err == nil || strings.Contains(out, "queued as") {
			t.Fatalf("AUTH without TLS went through:\n%s", out)
		}
	})
}

func TestAuthIsNeitherOfferedNorAcceptedBeforeTLS(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.dialPlain()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("STARTTLS not offered")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered on a plaintext connection")
	}
	wantCode(t, c.Auth(sasl.NewPlainClient("", shopUser, shopPass)), 530, "5.7.0")
	wantCode(t, c.Mail("orders@example.com", nil), 530, "5.7.0")
}

func TestSubmissionWithoutAuthIsRefused(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.dialStartTLS()
	se := wantCode(t, c.Mail("orders@example.com", nil), 530, "5.7.0")
	if !strings.Contains(se.Message, "Authentication required") {
		t.Fatalf("reply text %q", se.Message)
	}
}

func TestWrongPasswordThenThrottling(t *testing.T) {
	e := startRelay(t, envOptions{limits: "{authFailures: 3, authFailureWindow: 1h}"})
	for i := 0; i < 3; i++ {
		c := e.dialStartTLS()
		wantCode(t, c.Auth(sasl.NewPlainClient("", shopUser, "guess"+fmt.Sprint(i))), 535, "5.7.8")
	}
	c := e.dialStartTLS()
	wantCode(t, c.Auth(sasl.NewLoginClient("no-such-user", "x")), 454, "4.7.0")
	// Even the right password is refused while the address is throttled.
	c = e.dialStartTLS()
	wantCode(t, c.Auth(sasl.NewPlainClient("", shopUser, shopPass)), 454, "4.7.0")
	if strings.Contains(e.logs.String(), "guess0") {
		t.Fatal("a password attempt was logged")
	}
}

// TestNoOpenRelay probes the classic open-relay paths: no AUTH from an
// untrusted address, with and without TLS, for foreign and local senders.
func TestNoOpenRelay(t *testing.T) {
	e := startRelay(t, envOptions{})
	for _, from := range []string{"spammer@evil.example", "orders@example.com", ""} {
		for _, c := range []*smtp.Client{e.dialPlain(), e.dialStartTLS()} {
			wantCode(t, c.Mail(from, nil), 530, "5.7.0")
			if err := c.Rcpt("victim@example.net", nil); err == nil {
				t.Fatalf("RCPT accepted without a transaction")
			}
		}
	}
	if n := e.q.Len(); n != 0 {
		t.Fatalf("%d messages queued by unauthenticated clients", n)
	}
}

func TestSpoofedSendersAreRefusedByName(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.loggedIn(shopUser, shopPass)

	se := wantCode(t, c.Mail("ceo@news.example.org", nil), 550, "5.7.1")
	if !strings.Contains(se.Message, "ceo@news.example.org") || !strings.Contains(se.Message, shopUser) {
		t.Fatalf("envelope refusal does not name the problem: %q", se.Message)
	}
	wantCode(t, c.Mail("", nil), 550, "5.7.1")

	c.Reset()
	_, err := send(c, "orders@example.com", []string{"x@example.net"}, simpleMessage("ceo@news.example.org", "spoof"))
	se = wantCode(t, err, 550, "5.7.1")
	if !strings.Contains(se.Message, "From: header") || !strings.Contains(se.Message, "ceo@news.example.org") {
		t.Fatalf("From: refusal does not name the problem: %q", se.Message)
	}
	// Several From: addresses: all must be allowed.
	multi := strings.Replace(simpleMessage("orders@example.com", "two"), "From: Shop <orders@example.com>",
		"From: orders@example.com, boss@evil.example", 1)
	_, err = send(c, "orders@example.com", []string{"x@example.net"}, multi)
	wantCode(t, err, 550, "5.7.1")
	// Address-level allowances: bulk may use ceo@example.com but not the rest of example.com.
	b := e.loggedIn(bulkUser, bulkPass)
	if _, err := send(b, "ceo@example.com", []string{"x@example.net"}, simpleMessage("ceo@example.com", "ok")); err != nil {
		t.Fatalf("an allowed single address: %v", err)
	}
	wantCode(t, b.Mail("cfo@example.com", nil), 550, "5.7.1")
	if e.q.Len() != 1 {
		t.Fatalf("queue holds %d messages, want only the allowed one", e.q.Len())
	}
}

func TestOversizeIsRefused(t *testing.T) {
	e := startRelay(t, envOptions{limits: "{maxMessageSize: 64Ki}"})
	c := e.loggedIn(shopUser, shopPass)
	if size, ok := c.MaxMessageSize(); !ok || size != 64<<10 {
		t.Fatalf("SIZE advertised as %d (%v)", size, ok)
	}
	wantCode(t, c.Mail("orders@example.com", &smtp.MailOptions{Size: 100 << 10}), 552, "5.3.4")
	big := simpleMessage("orders@example.com", "big") + strings.Repeat("0123456789012345678901234567890123456789012345678901234567890123456789\r\n", 1200)
	_, err := send(c, "orders@example.com", []string{"x@example.net"}, big)
	wantCode(t, err, 552, "5.3.4")
	// The session is still usable after the refusal.
	if _, err := send(c, "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", "small")); err != nil {
		t.Fatalf("after an oversize message: %v", err)
	}
}

func TestTooManyRecipients(t *testing.T) {
	e := startRelay(t, envOptions{limits: "{maxRecipients: 5}"})
	c := e.loggedIn(shopUser, shopPass)
	if err := c.Mail("orders@example.com", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := c.Rcpt(fmt.Sprintf("r%d@example.net", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, c.Rcpt("r5@example.net", nil), 452, "4.5.3")

	// The credential's own, lower limit.
	b := e.loggedIn(bulkUser, bulkPass)
	if err := b.Mail("news@news.example.org", nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := b.Rcpt(fmt.Sprintf("r%d@example.net", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	se := wantCode(t, b.Rcpt("r3@example.net", nil), 452, "4.5.3")
	if !strings.Contains(se.Message, "3") {
		t.Fatalf("reply does not state the limit: %q", se.Message)
	}
}

func TestRateLimitPerCredential(t *testing.T) {
	e := startRelay(t, envOptions{credentials: fmt.Sprintf(
		"  - {username: %s, passwordHash: %q, allowedSenders: [example.com], limits: {messagesPerMinute: 2}}\n", shopUser, hashOf(t, shopPass))})
	c := e.loggedIn(shopUser, shopPass)
	for i := 0; i < 2; i++ {
		if _, err := send(c, "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", "r")); err != nil {
			t.Fatal(err)
		}
	}
	se := wantCode(t, c.Mail("orders@example.com", nil), 451, "4.7.1")
	if !strings.Contains(se.Message, "messagesPerMinute") {
		t.Fatalf("reply does not name the limit: %q", se.Message)
	}
	// A new session does not reset the budget.
	c2 := e.loggedIn(shopUser, shopPass)
	wantCode(t, c2.Mail("orders@example.com", nil), 451, "4.7.1")
}

func TestSuspendedCredentialAuthenticatesButCannotSend(t *testing.T) {
	e := startRelay(t, envOptions{credentials: fmt.Sprintf(
		"  - {username: %s, passwordHash: %q, allowedSenders: [example.com], suspended: true}\n", shopUser, hashOf(t, shopPass))})
	c := e.loggedIn(shopUser, shopPass)
	se := wantCode(t, c.Mail("orders@example.com", nil), 451, "4.7.1")
	if !strings.Contains(se.Message, "suspended") {
		t.Fatalf("reply %q", se.Message)
	}
}

func TestTrustedNetworkSubmitsWithoutAuthWithinItsSenders(t *testing.T) {
	e := startRelay(t, envOptions{extra: `trustedNetworks:
  - {name: legacy, cidrs: [127.0.0.2/32], allowedSenders: [billing@example.com]}
`})
	// From 127.0.0.2: trusted, no TLS, no AUTH.
	c := dialFrom(t, "127.0.0.2", e.submissionAddr())
	id, err := send(c, "billing@example.com", []string{"x@example.net"}, simpleMessage("billing@example.com", "invoice"))
	if err != nil {
		t.Fatalf("trusted submission: %v", err)
	}
	m, data := e.queued(id)
	if m.Origin != "network:legacy" || !strings.Contains(data, "with ESMTP id") {
		t.Fatalf("origin %q; trace:\n%s", m.Origin, data)
	}
	se := wantCode(t, c.Mail("orders@example.com", nil), 550, "5.7.1")
	if !strings.Contains(se.Message, "network legacy") {
		t.Fatalf("reply %q", se.Message)
	}
	// From 127.0.0.1: not trusted.
	wantCode(t, e.dialPlain().Mail("billing@example.com", nil), 530, "5.7.0")
}

func dialFrom(t *testing.T, local, addr string) *smtp.Client {
	t.Helper()
	d := netDialer(local)
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("legacy.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// ensureSwaksTLS installs the Perl TLS modules swaks needs for --tls; they
// are only recommended by the swaks package, so a --no-install-recommends
// install lacks them.
func ensureSwaksTLS(t *testing.T) {
	t.Helper()
	if exec.Command("perl", "-MNet::SSLeay", "-MIO::Socket::SSL", "-e1").Run() == nil {
		return
	}
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "libnet-ssleay-perl", "libio-socket-ssl-perl")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err != nil {
		// A fresh machine may have no package lists yet.
		exec.Command("apt-get", "update", "-qq").Run()
		if out, err := install(); err != nil {
			t.Fatalf("swaks needs Net::SSLeay and IO::Socket::SSL (Debian libnet-ssleay-perl, libio-socket-ssl-perl): %v\n%s", err, out)
		}
	}
}

func TestTLSOlderThan12IsRefused(t *testing.T) {
	e := startRelay(t, envOptions{})
	old := e.tlsConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := smtp.DialTLS(e.submissionsAddr(), old); err == nil {
		c.Close()
		t.Fatal("implicit TLS 1.1 handshake succeeded")
	}
	// go-smtp's client handshakes lazily, on the first command after
	// STARTTLS.
	if c, err := smtp.DialStartTLS(e.submissionAddr(), old); err == nil {
		err = c.Hello("old.test")
		c.Close()
		if err == nil {
			t.Fatal("STARTTLS with TLS 1.1 succeeded")
		}
	}
	// And the same client with TLS 1.2 gets through.
	modern := e.tlsConfig()
	modern.MaxVersion = tls.VersionTLS12
	c, err := smtp.DialTLS(e.submissionsAddr(), modern)
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	c.Close()
	c, err = smtp.DialStartTLS(e.submissionAddr(), modern)
	if err == nil {
		err = c.Hello("modern.test")
		c.Close()
	}
	if err != nil {
		t.Fatalf("STARTTLS with TLS 1.2: %v", err)
	}
}

func TestEightBitAndSMTPUTF8AreStoredForDelivery(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.loggedIn(shopUser, shopPass)
	sendWith := func(opts *smtp.MailOptions, rcpt, msg string) {
		t.Helper()
		if err := c.Mail("a@example.com", opts); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, msg)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The go-smtp client always announces BODY=8BITMIME when offered;
	// detection of undeclared 8-bit content is tested in message_test.go.
	sendWith(nil, "declared@example.net", simpleMessage("a@example.com", "plain"))
	sendWith(&smtp.MailOptions{UTF8: true}, "jörg@example.net", simpleMessage("a@example.com", "utf8"))

	got := map[string]queue.Message{}
	for _, m := range e.q.Messages() {
		got[m.Recipients[0].Address] = m
	}
	for rcpt, want := range map[string][2]bool{
		"declared@example.net": {true, false},
		"jörg@example.net":     {true, true},
	} {
		m := got[rcpt]
		if m.EightBit != want[0] || m.SMTPUTF8 != want[1] {
			t.Errorf("%s: 8bit=%v smtputf8=%v, want %v", rcpt, m.EightBit, m.SMTPUTF8, want)
		}
	}
}
