package httpapi_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
	"mailroom.io/mailroom/internal/testutil/promtest"
)

// A JSON message is built into MIME (alternative text and HTML, an inline
// image in multipart/related, a binary attachment in multipart/mixed),
// signed, and queued with its envelope (Bcc only there), tags and
// metadata; what delivery would send verifies with dkimpy, every line is
// within 998 octets, and the attachment decodes to the same bytes.
func TestJSONMessageIsBuiltSignedAndQueued(t *testing.T) {
	e := newEnv(t)
	blob := make([]byte, 150<<10)
	_, _ = rand.Read(blob)
	img := make([]byte, 2000)
	_, _ = rand.Read(img)
	long := strings.Repeat("x", 3000) // one line longer than 998 octets
	r := e.send(map[string]any{
		"from": "Shop <orders@example.com>", "to": []string{"Ann <ann@example.net>"}, "cc": []string{"cc@example.net"},
		"bcc": []string{"hidden@example.org"}, "replyTo": []string{"help@example.com"}, "subject": "Your order – №42",
		"text": "Hello\n" + long, "html": `<p>Hello <img src="cid:logo"></p>`,
		"headers":     map[string]string{"X-Order": "42"},
		"attachments": []map[string]string{{"filename": "data.bin", "contentType": "application/octet-stream", "content": base64.StdEncoding.EncodeToString(blob)}, {"contentId": "logo", "contentType": "image/png", "content": base64.StdEncoding.EncodeToString(img)}},
		"tags":        []string{"order"}, "metadata": map[string]string{"order": "42"},
	}, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var ans struct{ ID, MessageID string }
	r.json(t, &ans)
	m, data := e.stored(ans.ID)

	if m.From != "orders@example.com" {
		t.Errorf("envelope from %q", m.From)
	}
	var rcpts []string
	for _, rc := range m.Recipients {
		rcpts = append(rcpts, rc.Address)
	}
	if want := []string{"ann@example.net", "cc@example.net", "hidden@example.org"}; !slices.Equal(rcpts, want) {
		t.Errorf("envelope recipients %v, want %v", rcpts, want)
	}
	if !slices.Equal(m.Tags, []string{"order"}) || m.Metadata["order"] != "42" || m.Origin != "user:shop" {
		t.Errorf("tags %v metadata %v origin %q", m.Tags, m.Metadata, m.Origin)
	}
	if m.MessageID == "" || m.MessageID != ans.MessageID {
		t.Errorf("Message-ID in queue %q, answered %q", m.MessageID, ans.MessageID)
	}
	if out, err := dkimpy.Verify(e.dns.Addr, data); err != nil {
		t.Errorf("dkimpy: %v\n%s", err, out)
	}
	for i, line := range bytes.Split(data, []byte("\r\n")) {
		if len(line) > 998 {
			t.Errorf("line %d is %d octets", i+1, len(line))
		}
	}

	mr, err := mail.CreateReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if mr.Header.Get("Bcc") != "" || bytes.Contains(data, []byte("hidden@example.org")) {
		t.Error("the Bcc address appears in the message")
	}
	if id, _ := mr.Header.MessageID(); id != ans.MessageID {
		t.Errorf("Message-ID header %q, answered %q", id, ans.MessageID)
	}
	if s, _ := mr.Header.Subject(); s != "Your order – №42" {
		t.Errorf("Subject %q", s)
	}
	if mr.Header.Get("X-Order") != "42" {
		t.Error("custom header missing")
	}
	var gotBlob, gotImg []byte
	var text string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		switch h := p.Header.(type) {
		case *mail.AttachmentHeader:
			if name, _ := h.Filename(); name == "data.bin" {
				gotBlob = b
			}
		case *mail.InlineHeader:
			ct, _, _ := h.ContentType()
			switch {
			case ct == "text/plain":
				text = string(b)
			case h.Get("Content-Id") == "<logo>":
				gotImg = b
			}
		}
	}
	if !bytes.Equal(gotBlob, blob) {
		t.Errorf("attachment: got %d bytes, want the %d sent", len(gotBlob), len(blob))
	}
	if !bytes.Equal(gotImg, img) {
		t.Errorf("inline image: got %d bytes, want %d", len(gotImg), len(img))
	}
	if want := "Hello\r\n" + long; text != want && text != "Hello\n"+long {
		t.Errorf("text part differs: %d bytes, want %d", len(text), len(want))
	}
	// The structure is mixed(alternative(text, related(html, image)), file).
	top, _ := message.Read(bytes.NewReader(data))
	if ct, _, _ := top.Header.ContentType(); ct != "multipart/mixed" {
		t.Errorf("top Content-Type %q", ct)
	}
}

// A raw message with LF line endings is queued with CRLF, its Bcc: field
// removed, the envelope from the query, and signed.
func TestRawMessageTakesTheEnvelopeFromTheQueryOrHeader(t *testing.T) {
	e := newEnv(t)
	raw := "From: orders@example.com\nTo: ann@example.net\nBcc: hidden@example.org\nSubject: raw\n\nline one\nline two\n"
	r := e.do(request{method: "POST", path: "/v1/messages", contentType: "message/rfc822", body: []byte(raw),
		user: shopUser, pass: shopPass})
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var ans struct{ ID string }
	r.json(t, &ans)
	m, data := e.stored(ans.ID)
	if len(m.Recipients) != 2 || m.Recipients[1].Address != "hidden@example.org" || m.From != "orders@example.com" {
		t.Errorf("envelope %s -> %+v", m.From, m.Recipients)
	}
	if bytes.Contains(data, []byte("Bcc:")) || bytes.Contains(data, []byte("hidden@")) {
		t.Errorf("Bcc survived:\n%s", data)
	}
	if !bytes.Contains(data, []byte("\r\nline one\r\nline two\r\n")) {
		t.Errorf("line endings not CRLF:\n%q", data)
	}
	if out, err := dkimpy.Verify(e.dns.Addr, data); err != nil {
		t.Errorf("dkimpy: %v\n%s", err, out)
	}

	// The query overrides the header's envelope.
	r = e.do(request{method: "POST", path: "/v1/messages?from=bounce@example.com&to=x@example.net&to=y@example.net",
		contentType: "message/rfc822", body: []byte(raw), user: shopUser, pass: shopPass})
	r.json(t, &ans)
	m, _ = e.stored(ans.ID)
	if m.From != "bounce@example.com" || len(m.Recipients) != 2 || m.Recipients[0].Address != "x@example.net" {
		t.Errorf("envelope from the query: %s -> %+v", m.From, m.Recipients)
	}
}

// smtpTry runs MAIL, RCPTs and DATA with msg and returns the first
// refusal.
func smtpTry(t *testing.T, c *smtp.Client, from string, to []string, msg string) *smtp.SMTPError {
	t.Helper()
	err := func() error {
		if err := c.Mail(from, nil); err != nil {
			return err
		}
		for _, r := range to {
			if err := c.Rcpt(r, nil); err != nil {
				return err
			}
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, msg); err != nil {
			return err
		}
		return w.Close()
	}()
	_ = c.Reset()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("SMTP: want a refusal, got %v", err)
	}
	return se
}

// The API refuses what SMTP refuses, with SMTP's code, enhanced status and
// text in the problem document, and the HTTP status from the relay's table.
func TestRefusalsMatchTheSMTPReplies(t *testing.T) {
	e := newEnv(t)
	header := func(from string, to ...string) string {
		return fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: t\r\n\r\n", from, strings.Join(to, ", "))
	}
	big := strings.Repeat(strings.Repeat("y", 76)+"\r\n", 4000) // 312 KB > maxMessageSize 256Ki
	cases := []struct {
		name       string
		user, pass string
		from       string
		to         []string
		body       string
		before     func()
		status     int
		smtp       string // code and enhanced status
	}{
		{name: "sender not allowed", user: shopUser, pass: shopPass, from: "ceo@other.example", to: []string{"a@example.net"},
			status: 403, smtp: "550 5.7.1"},
		{name: "too many recipients", user: tightUser, pass: tightPass, from: "a@tight.example.com",
			to: []string{"a@example.net", "b@example.net", "c@example.net"}, status: 422, smtp: "452 4.5.3"},
		{name: "too big", user: shopUser, pass: shopPass, from: "a@example.com", to: []string{"a@example.net"}, body: big,
			status: 413, smtp: "552 5.3.4"},
		{name: "storage full", user: shopUser, pass: shopPass, from: "a@example.com", to: []string{"a@example.net"},
			before: func() { e.free.Store(512 << 10) }, status: 507, smtp: "452 4.3.1"},
		{name: "rate limited", user: tightUser, pass: tightPass, from: "a@tight.example.com", to: []string{"a@example.net"},
			before: func() {
				e.free.Store(1 << 40)
				// Spend the minute's one message over SMTP (MAIL takes it,
				// if an earlier case's MAIL has not): the budget is the
				// credential's, whichever protocol uses it.
				c := e.smtpClient(tightUser, tightPass)
				_ = c.Mail("a@tight.example.com", nil)
				_ = c.Reset()
			}, status: 429, smtp: "451 4.7.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			msg := header(tc.from, tc.to...) + "body\r\n" + tc.body
			raw := e.do(request{method: "POST", path: "/v1/messages?from=" + tc.from + "&to=" + strings.Join(tc.to, "&to="),
				contentType: "message/rfc822", body: []byte(msg), user: tc.user, pass: tc.pass})
			if raw.status != tc.status {
				t.Fatalf("status %d, want %d: %s", raw.status, tc.status, raw.body)
			}
			p := raw.problem(t)
			if got := fmt.Sprintf("%d %s", p.SMTPCode, p.EnhancedStatus); got != tc.smtp {
				t.Errorf("problem says %s, want %s", got, tc.smtp)
			}
			if p.Status != tc.status || p.Title == "" || !strings.HasPrefix(p.Type, "https://mailroom.io/problems/") {
				t.Errorf("problem %+v", p)
			}
			if tc.status == 429 && raw.header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			se := smtpTry(t, e.smtpClient(tc.user, tc.pass), tc.from, tc.to, msg)
			got := fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
			if got != tc.smtp || se.Message != p.Detail {
				t.Errorf("SMTP replied %s %q; API said %s %q", got, se.Message, tc.smtp, p.Detail)
			}
		})
	}
	if n := promtest.Value(t, e.metrics.Registry, "mailroom_api_requests_total", "endpoint", "messages", "code", "403"); n != 1 {
		t.Errorf(`mailroom_api_requests_total{endpoint="messages",code="403"} = %v, want 1`, n)
	}
}

// Requests that are not well-formed are refused with 400 naming the field
// at fault: one invalid input per case.
func TestBadRequestsNameTheField(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, body, field string
	}{
		{"not JSON", `{"from": `, ""},
		{"unknown member", `{"from":"a@example.com","to":["b@example.net"],"text":"x","colour":"red"}`, "colour"},
		{"wrong type", `{"from":"a@example.com","to":"b@example.net","text":"x"}`, "to"},
		{"wrong type inside an attachment", `{"from":"a@example.com","to":["b@example.net"],"text":"x","attachments":[{"filename":"f","content":5}]}`, "attachments[0].content"},
		{"duplicate member", `{"from":"a@example.com","from":"b@example.com","to":["b@example.net"],"text":"x"}`, "from"},
		{"member name in another case", `{"From":"a@example.com","to":["b@example.net"],"text":"x"}`, "From"},
		{"data after the object", `{"from":"a@example.com","to":["b@example.net"],"text":"x"} {}`, ""},
		{"no from", `{"to":["b@example.net"],"text":"x"}`, "from"},
		{"bad address", `{"from":"a@example.com","to":["b@"],"text":"x"}`, "to[0]"},
		{"no recipient", `{"from":"a@example.com","text":"x"}`, "to"},
		{"no body", `{"from":"a@example.com","to":["b@example.net"]}`, "text"},
		{"bad base64", `{"from":"a@example.com","to":["b@example.net"],"text":"x","attachments":[{"filename":"f","content":"%%%"}]}`, "attachments[0].content"},
		{"reserved header", `{"from":"a@example.com","to":["b@example.net"],"text":"x","headers":{"Bcc":"c@example.net"}}`, "headers.Bcc"},
		{"header injection", `{"from":"a@example.com","to":["b@example.net"],"text":"x","headers":{"X-A":"1\r\nBcc: c@example.net"}}`, "headers.X-A"},
		{"subject with a line break", `{"from":"a@example.com","to":["b@example.net"],"text":"x","subject":"a\nBcc: c@example.net"}`, "subject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(request{method: "POST", path: "/v1/messages", contentType: "application/json", body: []byte(tc.body),
				user: shopUser, pass: shopPass, invalid: true})
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if p := r.problem(t); p.Field != tc.field || p.Detail == "" {
				t.Errorf("field %q detail %q, want field %q", p.Field, p.Detail, tc.field)
			}
		})
	}
	if e.q.Len() != 0 {
		t.Errorf("%d messages queued from bad requests", e.q.Len())
	}
}

// Basic and bearer authentication: a missing or wrong credential is 401
// with a challenge; a rotated-out API key works until its notAfter on the
// relay's clock; failures from one address are throttled for SMTP AUTH too.
func TestAuthenticationBasicBearerRotationAndThrottle(t *testing.T) {
	e := newEnv(t)
	msg := []byte(`{"from":"a@example.com","to":["b@example.net"],"text":"x"}`)
	post := func(user, pass, bearer string) response {
		return e.do(request{method: "POST", path: "/v1/messages", contentType: "application/json", body: msg,
			user: user, pass: pass, bearer: bearer, invalid: user == "" && bearer == ""})
	}
	if r := post("", "", ""); r.status != 401 || len(r.header.Values("WWW-Authenticate")) != 2 {
		t.Errorf("no credentials: %d %v", r.status, r.header.Values("WWW-Authenticate"))
	}
	if r := post("", "", e.shopKey); r.status != 202 {
		t.Errorf("current API key: %d %s", r.status, r.body)
	}
	if r := post("", "", e.oldKey); r.status != 202 {
		t.Errorf("previous API key before notAfter: %d %s", r.status, r.body)
	}
	e.clock.Step(2 * time.Hour)
	r := post("", "", e.oldKey)
	if r.status != 401 {
		t.Fatalf("previous API key after notAfter: %d %s", r.status, r.body)
	}
	if p := r.problem(t); p.SMTPCode != 535 || p.EnhancedStatus != "5.7.8" {
		t.Errorf("bad key problem %+v", p)
	}
	// Failures so far: one (the expired key). Two more reach authFailures.
	post(shopUser, "wrong-password", "")
	post("", "", "mrk.not-a-key")
	r = post(shopUser, shopPass, "")
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("after 3 failures the right password got %d %s", r.status, r.body)
	}
	if p := r.problem(t); p.SMTPCode != 454 || p.EnhancedStatus != "4.7.0" {
		t.Errorf("throttled problem %+v", p)
	}
	c, err := smtp.DialStartTLS(e.srv.Addr(relay.ListenerSubmission).String(), &tls.Config{RootCAs: e.pool, ServerName: "relay.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var se *smtp.SMTPError
	if err := c.Auth(sasl.NewPlainClient("", shopUser, shopPass)); !errors.As(err, &se) || se.Code != 454 {
		t.Errorf("SMTP AUTH from the throttled address: %v, want 454", err)
	}
}

// A retried request with the same Idempotency-Key and body gets the first
// answer and queues nothing; a different body with that key is refused;
// concurrent retries queue once.
func TestIdempotencyKeyQueuesOnce(t *testing.T) {
	e := newEnv(t)
	msg := map[string]any{"from": "a@example.com", "to": []string{"b@example.net"}, "text": "once"}
	key := map[string]string{"Idempotency-Key": "order-42-confirmation"}
	first := e.send(msg, key)
	if first.status != 202 {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	again := e.send(msg, key)
	if again.status != 202 || !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: %d %s (replayed %q), first %s", again.status, again.body, again.header.Get("Idempotent-Replayed"), first.body)
	}
	if e.q.Len() != 1 {
		t.Errorf("queue holds %d messages after a retry, want 1", e.q.Len())
	}
	msg["text"] = "different"
	r := e.send(msg, key)
	if r.status != 422 {
		t.Fatalf("same key, other body: %d %s", r.status, r.body)
	}
	if p := r.problem(t); p.Field != "Idempotency-Key" {
		t.Errorf("problem %+v", p)
	}

	// Ten concurrent requests with a fresh key: one message; every answer
	// is either its 202 or 409 (retry later).
	key = map[string]string{"Idempotency-Key": "burst"}
	var wg sync.WaitGroup
	codes := make([]int, 10)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = e.send(msg, key).status
		}()
	}
	wg.Wait()
	for _, c := range codes {
		if c != 202 && c != 409 {
			t.Errorf("concurrent retry answered %d", c)
		}
	}
	if e.q.Len() != 2 {
		t.Errorf("queue holds %d messages, want 2", e.q.Len())
	}
}
