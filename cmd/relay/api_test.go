package main_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"mailroom.io/mailroom/internal/apikey"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/relay/password"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// apiRelay is the relay binary with the HTTP API on, a credential "app"
// (allowed example.com) with an API key, delivering into w; its DKIM key
// is published in w's DNS.
type apiRelay struct {
	*relayProc
	url    string
	key    string
	client *http.Client
}

func (w *world) apiRelay() *apiRelay {
	t := w.t
	t.Helper()
	p := w.relay(fastRetry, "")
	key, err := apikey.New("app")
	if err != nil {
		t.Fatal(err)
	}
	kh, err := password.HashToken(key)
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.Replace(cfg, []byte("listeners: {"), []byte(fmt.Sprintf("listeners: {api: %q, ", apiAddr)), 1)
	// The password is not used here; the credential needs one.
	ph, _ := password.HashToken(strings.Repeat("p", 40))
	cfg = append(cfg, fmt.Sprintf("credentials:\n  - {username: app, passwordHash: %q, apiKeyHash: %q, allowedSenders: [example.com]}\n", ph, kh)...)
	if err := os.WriteFile(p.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	pemKey, err := os.ReadFile(filepath.Join(p.dir, "dkim.pem"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := dkim.ParsePrivateKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := dkim.RecordText(signer)
	w.DNS.Add(t, fmt.Sprintf("ed1._domainkey.example.com. 300 IN TXT %q", rec))
	certPEM, _ := os.ReadFile(filepath.Join(p.dir, "tls.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return &apiRelay{relayProc: p, url: "https://" + apiAddr, key: key, client: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "relay.test"}}}}
}

// post sends body to /v1/messages; err is the transport's (the relay died
// before answering).
func (a *apiRelay) post(contentType string, body []byte, idemKey string) (int, []byte, error) {
	req, _ := http.NewRequest("POST", a.url+"/v1/messages", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+a.key)
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// JSON and raw API messages reach the receiving server DKIM-signed
// (dkimpy verifies them), and an attachment arrives byte for byte.
func TestAPIMessagesArriveSignedWithTheirAttachment(t *testing.T) {
	w := newWorld(t, "127.77.30.1")
	w.mx("example.net", 10, "mx.example.net", "127.77.30.1")
	sink := w.sink("127.77.30.1", smtpsink.Options{})
	a := w.apiRelay()
	a.start()

	blob := make([]byte, 200<<10)
	_, _ = rand.Read(blob)
	body, _ := json.Marshal(map[string]any{"from": "App <app@example.com>", "to": []string{"ann@example.net"},
		"subject": "with file", "text": "see attached", "html": "<p>see attached</p>",
		"headers":     map[string]string{"X-Test-ID": "json"},
		"attachments": []map[string]string{{"filename": "blob.bin", "content": base64.StdEncoding.EncodeToString(blob)}}})
	if code, b, err := a.post("application/json", body, ""); err != nil || code != 202 {
		t.Fatalf("JSON: %d %s %v", code, b, err)
	}
	raw := "From: app@example.com\nTo: bob@example.net\nSubject: raw\nX-Test-ID: raw\n\nraw body\n"
	if code, b, err := a.post("message/rfc822", []byte(raw), ""); err != nil || code != 202 {
		t.Fatalf("raw: %d %s %v", code, b, err)
	}
	poll(t, "both messages at the sink", 60*time.Second, func() bool {
		d := delivered(sink)
		return d["json"] == 1 && d["raw"] == 1
	})
	for _, m := range sink.Accepted() {
		if out, err := dkimpy.Verify(w.DNS.Addr, m.Data); err != nil {
			t.Errorf("dkimpy on the message to %v: %v\n%s", m.Rcpts, err, out)
		}
		if m.Rcpts[0] != "ann@example.net" {
			continue
		}
		mr, err := mail.CreateReader(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if h, ok := p.Header.(*mail.AttachmentHeader); ok {
				if name, _ := h.Filename(); name == "blob.bin" {
					got, _ = io.ReadAll(p.Body)
				}
			}
		}
		if !bytes.Equal(got, blob) {
			t.Errorf("attachment at the sink: %d bytes, not the %d sent", len(got), len(blob))
		}
	}
}

// A relay killed with SIGKILL after the message is durable and before the
// 202 is written answers the retry, after its restart, with the first
// queue id; the recipient gets one message.
func TestIdempotencyKeySurvivesSIGKILLBetweenCommitAndResponse(t *testing.T) {
	w := newWorld(t, "127.77.30.2")
	w.mx("example.net", 10, "mx.example.net", "127.77.30.2")
	sink := w.sink("127.77.30.2", smtpsink.Options{})
	a := w.apiRelay()
	a.env = []string{"MAILROOM_TEST_KILL_AFTER_COMMIT=1"}
	a.start()
	body, _ := json.Marshal(map[string]any{"from": "app@example.com", "to": []string{"ann@example.net"},
		"subject": "once", "text": "once", "headers": map[string]string{"X-Test-ID": "once"}})
	if code, b, err := a.post("application/json", body, "reset-ann-1"); err == nil {
		t.Fatalf("the relay answered %d %s; it should have died before answering", code, b)
	}
	if err := a.wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("relay exit: %v, want killed", err)
	}

	a.env = nil
	a.start()
	code, b, err := a.post("application/json", body, "reset-ann-1")
	if err != nil || code != 202 {
		t.Fatalf("retry: %d %s %v", code, b, err)
	}
	var ans struct{ ID string }
	_ = json.Unmarshal(b, &ans)
	poll(t, "the message at the sink", 60*time.Second, func() bool { return delivered(sink)["once"] >= 1 })
	// A second retry after delivery still answers with the same id.
	code, b2, _ := a.post("application/json", body, "reset-ann-1")
	if code != 202 || !bytes.Equal(b2, b) {
		t.Errorf("second retry: %d %s, want %s", code, b2, b)
	}
	var got []string
	for _, m := range sink.Accepted() {
		if i := bytes.Index(m.Data, []byte("(mailroom) via HTTPS id ")); i >= 0 {
			got = append(got, string(m.Data[i+24:i+24+len(ans.ID)]))
		}
	}
	if len(got) != 1 || got[0] != ans.ID {
		t.Errorf("the sink got messages with queue ids %v, want one with %s", got, ans.ID)
	}
}
