package smtpsink_test

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

func dial(t *testing.T, s *smtpsink.Sink) *smtp.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = 10 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

func send(c *smtp.Client, from string, to []string, body string) error {
	return c.SendMail(from, to, strings.NewReader(body))
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestRecordsWhatItAccepts(t *testing.T) {
	s := smtpsink.Start(t, "127.0.0.2:0", smtpsink.Options{})
	c := dial(t, s)
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.com", []string{"b@example.net"}, "Subject: x\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	m := s.Accepted()
	if len(m) != 1 || m[0].From != "a@example.com" || m[0].Rcpts[0] != "b@example.net" || string(m[0].Data) != "Subject: x\r\n\r\nhi\r\n" || m[0].Helo != "client.test" {
		t.Errorf("recorded %+v", m)
	}
	if tr := s.Conns()[0].Transcript; tr[0] != "EHLO client.test" || !strings.HasPrefix(tr[1], "MAIL FROM:<a@example.com>") {
		t.Errorf("transcript %v", tr)
	}
}

func TestScriptedRepliesPerRecipientAndTimes(t *testing.T) {
	s := smtpsink.Start(t, "127.0.0.2:0", smtpsink.Options{Script: smtpsink.Script{Rcpt: map[string]smtpsink.Action{
		"bob@example.net": {Reply: smtpsink.Reply(550, "5.1.1", "no such user")},
		"*":               {Reply: smtpsink.Reply(451, "4.7.1", "greylisted"), Times: 1},
	}}})
	c := dial(t, s)
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.net", nil); code(err) != 550 {
		t.Errorf("bob: %v", err)
	}
	if err := c.Rcpt("carol@example.net", nil); code(err) != 451 {
		t.Errorf("carol first: %v", err)
	}
	if err := c.Rcpt("carol@example.net", nil); err != nil {
		t.Errorf("carol second: %v", err)
	}
}

func TestConnectReplyReplacesTheGreeting(t *testing.T) {
	s := smtpsink.Start(t, "127.0.0.2:0", smtpsink.Options{Script: smtpsink.Script{
		Connect: smtpsink.Action{Reply: smtpsink.Reply(421, "4.3.2", "busy"), Times: 1},
	}})
	if err := dial(t, s).Hello("x"); code(err) != 421 {
		t.Errorf("first connection: %v", err)
	}
	if err := dial(t, s).Hello("x"); err != nil {
		t.Errorf("second connection: %v", err)
	}
	if n := len(s.Conns()); n != 2 {
		t.Errorf("%d connections", n)
	}
}

func TestStallAndDrop(t *testing.T) {
	s := smtpsink.Start(t, "127.0.0.2:0", smtpsink.Options{Script: smtpsink.Script{
		Mail: smtpsink.Action{Stall: true, Times: 1},
		Data: smtpsink.Action{Drop: true},
	}})
	c := dial(t, s)
	c.CommandTimeout = 300 * time.Millisecond
	var ne net.Error
	if err := c.Mail("a@example.com", nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("stalled MAIL: %v", err)
	}
	c = dial(t, s)
	err := send(c, "a@example.com", []string{"b@example.net"}, "Subject: x\r\n\r\nhi\r\n")
	if err == nil || code(err) != 0 {
		t.Errorf("dropped DATA: %v", err)
	}
	if len(s.Messages()) != 0 {
		t.Error("a dropped message was recorded")
	}
}

func TestWaitHoldsAPhase(t *testing.T) {
	gate := make(chan struct{})
	s := smtpsink.Start(t, "127.0.0.2:0", smtpsink.Options{Script: smtpsink.Script{Data: smtpsink.Action{Wait: gate}}})
	done := make(chan error)
	go func() {
		conn, err := net.Dial("tcp", s.Addr)
		if err != nil {
			done <- err
			return
		}
		c := smtp.NewClient(conn)
		defer c.Close()
		done <- c.SendMail("a@example.com", []string{"b@example.net"}, strings.NewReader("x\r\n"))
	}()
	for s.Waiting("data") != 1 {
		time.Sleep(5 * time.Millisecond)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(s.Accepted()) != 1 || s.Peak() != 1 {
		t.Errorf("accepted %d, peak %d", len(s.Accepted()), s.Peak())
	}
}

func TestSTARTTLSAndAuth(t *testing.T) {
	ca := smtpsink.NewCA(t)
	s := smtpsink.Start(t, "127.0.0.2:0", smtpsink.Options{
		TLS:   ca.ServerTLS(t, "mx.example.test"),
		Users: map[string]string{"u": "p"},
	})
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{ServerName: "mx.example.test", RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "u", "wrong")); code(err) != 535 {
		t.Errorf("wrong password: %v", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@example.com", []string{"b@example.net"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	m := s.Accepted()[0]
	if !m.TLS || m.ServerName != "mx.example.test" || m.AuthUser != "u" || s.AuthFailures() != 1 {
		t.Errorf("recorded %+v, auth failures %d", m, s.AuthFailures())
	}
	if tr := s.Conns()[0].Transcript; len(tr) != 2 || tr[1] != "STARTTLS" {
		t.Errorf("cleartext transcript %v", tr)
	}
}

func TestListenSharedBindsOnePortOnEveryIP(t *testing.T) {
	lns := smtpsink.ListenShared(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	port := lns[0].Addr().(*net.TCPAddr).Port
	for i, ln := range lns {
		a := ln.Addr().(*net.TCPAddr)
		if a.Port != port || a.IP.String() != []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}[i] {
			t.Errorf("listener %d on %v", i, a)
		}
		ln.Close()
	}
}
