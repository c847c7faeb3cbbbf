package main

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestVerifyWebhook checks the receiver's own verification against the
// library the relay signs with, and that any change to what is signed is
// refused.
func TestVerifyWebhook(t *testing.T) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(raw)
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	key, err := webhookKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id, body := "evt_0123", []byte(`{"type":"delivered","queueId":"Q1"}`)
	sig, err := wh.Sign(id, now, body)
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	if err := verifyWebhook(key, id, ts, sig, body, now, 5*time.Minute); err != nil {
		t.Fatalf("a post the library signed: %v", err)
	}
	if err := verifyWebhook(key, id, ts, "v1,bm9wZQ== "+sig, body, now, 5*time.Minute); err != nil {
		t.Errorf("one matching signature among several: %v", err)
	}
	other := make([]byte, 32)
	other[0] = 1
	for name, tc := range map[string]struct {
		key      []byte
		id, ts   string
		sig      string
		body     string
		now      time.Time
		contains string
	}{
		"body":      {body: `{"type":"delivered","queueId":"Q2"}`, contains: "no v1 signature"},
		"id":        {id: "evt_0124", contains: "no v1 signature"},
		"timestamp": {ts: strconv.FormatInt(now.Unix()+1, 10), contains: "no v1 signature"},
		"signature": {sig: "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32)), contains: "no v1 signature"},
		"version":   {sig: "v2," + strings.TrimPrefix(sig, "v1,"), contains: "no v1 signature"},
		"key":       {key: other, contains: "no v1 signature"},
		"stale":     {now: now.Add(6 * time.Minute), contains: "from now"},
		"missing":   {sig: " ", contains: "missing"},
	} {
		k, i, s, st, b, n := key, id, sig, ts, string(body), now
		if tc.key != nil {
			k = tc.key
		}
		if tc.id != "" {
			i = tc.id
		}
		if tc.ts != "" {
			st = tc.ts
		}
		if tc.sig != "" {
			s = strings.TrimSpace(tc.sig)
		}
		if tc.body != "" {
			b = tc.body
		}
		if !tc.now.IsZero() {
			n = tc.now
		}
		err := verifyWebhook(k, i, st, s, []byte(b), n, 5*time.Minute)
		if err == nil || !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("%s changed: got %v, want an error containing %q", name, err, tc.contains)
		}
	}
	for _, bad := range []string{"", "whsec_", "whsec_!!", "sk_abc"} {
		if _, err := webhookKey(bad); err == nil {
			t.Errorf("webhookKey(%q) accepted it", bad)
		}
	}
}
