package relay_test

import (
	"strings"
	"testing"

	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/testutil/bindtest"
	"mailroom.io/mailroom/internal/testutil/dkimpy"
)

// publishKey puts a selector's key record into the zone, split into DNS
// strings of at most 255 bytes.
func publishKey(t *testing.T, ns *bindtest.Server, selector string) {
	t.Helper()
	rk, ek := dkimKeys(t)
	signer := rk
	if selector == "ed1" {
		signer = ek
	}
	text, err := dkim.RecordText(signer)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for len(text) > 255 {
		parts, text = append(parts, text[:255]), text[255:]
	}
	ns.SetTXT(t, selector+"._domainkey", append(parts, text)...)
}

func TestSignaturesVerifyWithDkimpyAgainstBIND(t *testing.T) {
	ns := bindtest.Start(t, "example.com")
	publishKey(t, ns, "rsa1")
	publishKey(t, ns, "ed1")
	e := startRelay(t, envOptions{})

	longSubject := "Ihre Bestellung " + strings.Repeat("wurde versandt und ist unterwegs ", 12)
	messages := map[string]string{
		"plain": simpleMessage("orders@example.com", "plain"),
		"utf8 body, long header lines": "From: =?utf-8?q?B=C3=BCcher_Shop?= <orders@example.com>\r\n" +
			"To: a@example.net,\r\n b@example.net,\r\n c@example.net\r\n" +
			"Subject: " + foldHeader(longSubject) + "\r\n" +
			"X-Long-Unfolded: " + strings.Repeat("x", 900) + "\r\n" +
			"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
			"Grüße aus Köln — ваш заказ отправлен. 注文は発送されました。 🚚\r\n" +
			"Trailing spaces here   \r\n\tand a tab-led line\r\n\r\n\r\n",
	}
	c := e.loggedIn(shopUser, shopPass)
	for name, msg := range messages {
		t.Run(name, func(t *testing.T) {
			id, err := send(c, "orders@example.com", []string{"a@example.net"}, msg)
			if err != nil {
				t.Fatal(err)
			}
			_, data := e.queued(id)
			out, err := dkimpy.Verify(ns.Addr, []byte(data))
			if err != nil {
				t.Fatalf("dkimpy did not verify: %v\n%s\n--- message ---\n%s", err, out, data)
			}
			for _, want := range []string{"pass d=example.com s=rsa1 a=rsa-sha256", "pass d=example.com s=ed1 a=ed25519-sha256"} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("dkimpy output lacks %q:\n%s", want, out)
				}
			}
			if !strings.Contains(data, "h=From:From:") || !strings.Contains(data, "c=relaxed/relaxed") {
				t.Fatalf("want relaxed/relaxed with From over-signed:\n%s", data)
			}

			// The same verifier must reject the message once a signed
			// field is altered, or the check above proves nothing.
			tampered := strings.Replace(data, "\r\nSubject: ", "\r\nSubject: Re: ", 1)
			if out, err := dkimpy.Verify(ns.Addr, []byte(tampered)); err == nil {
				t.Fatalf("dkimpy accepted a tampered message:\n%s", out)
			}
			// So must adding a second From: field (over-signing).
			added := strings.Replace(data, "\r\nFrom: ", "\r\nFrom: attacker@evil.example\r\nFrom: ", 1)
			if out, err := dkimpy.Verify(ns.Addr, []byte(added)); err == nil {
				t.Fatalf("dkimpy accepted an added From: field:\n%s", out)
			}
		})
	}
}

// foldHeader folds a long value at spaces into lines under 78 characters.
func foldHeader(v string) string {
	var b strings.Builder
	line := 9 // "Subject: "
	for i, w := range strings.Fields(v) {
		if i > 0 {
			if line+1+len(w) > 76 {
				b.WriteString("\r\n ")
				line = 1
			} else {
				b.WriteString(" ")
				line++
			}
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String()
}
