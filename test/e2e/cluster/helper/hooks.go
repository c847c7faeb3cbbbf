package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// hooks is an application's webhook receiver: POST -path takes delivery
// events signed as the Standard Webhooks specification says, verified
// here with crypto/hmac alone (not the relay's library) under the secret
// in WEBHOOK_SECRET (the credential Secret's webhook-secret); a request
// that fails verification is answered 401 and not recorded. GET /events
// lists what was verified (one entry per webhook-id) and what was refused
// and why, for the suite to read.
func hooks(args []string) error {
	fs := flag.NewFlagSet("hooks", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "HTTP listen address")
	path := fs.String("path", "/hooks", "path events are posted to")
	tolerance := fs.Duration("tolerance", 5*time.Minute, "how far webhook-timestamp may be from now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := os.Getenv("WEBHOOK_SECRET")
	key, err := webhookKey(secret)
	if err != nil {
		return fmt.Errorf("WEBHOOK_SECRET: %w", err)
	}
	r := &receiver{key: key, tolerance: *tolerance, seen: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("POST "+*path, r.post)
	mux.HandleFunc("GET /events", r.list)
	fmt.Printf("e2e-helper: webhook receiver on %s%s, uid %d\n", *listen, *path, os.Getuid())
	return listenAndServe(*listen, mux)
}

// receivedEvent is one verified post as GET /events shows it: its
// headers and the body exactly as posted (base64 in JSON), so that the
// suite can check and replay it.
type receivedEvent struct {
	WebhookID string `json:"webhookId"`
	Timestamp int64  `json:"timestamp"`
	Signature string `json:"signature"`
	Body      []byte `json:"body"`
	Posts     int    `json:"posts"` // how often this webhook-id came
}

type receiver struct {
	key       []byte
	tolerance time.Duration

	mu      sync.Mutex
	events  []receivedEvent
	seen    map[string]bool
	refused []string
}

func (r *receiver) post(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, ts, sig := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
	if err := verifyWebhook(r.key, id, ts, sig, body, time.Now(), r.tolerance); err != nil {
		r.mu.Lock()
		r.refused = append(r.refused, fmt.Sprintf("webhook-id %q: %v", id, err))
		r.mu.Unlock()
		fmt.Printf("e2e-helper: refused webhook-id %q: %v\n", id, err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if !json.Valid(body) {
		http.Error(w, "body is not JSON", http.StatusBadRequest)
		return
	}
	sec, _ := strconv.ParseInt(ts, 10, 64)
	r.mu.Lock()
	if r.seen[id] {
		for i := range r.events {
			if r.events[i].WebhookID == id {
				r.events[i].Posts++
			}
		}
	} else {
		r.seen[id] = true
		r.events = append(r.events, receivedEvent{WebhookID: id, Timestamp: sec, Signature: sig, Body: body, Posts: 1})
	}
	r.mu.Unlock()
	fmt.Printf("e2e-helper: verified webhook-id %s: %s\n", id, body)
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) list(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	out := struct {
		Events  []receivedEvent `json:"events"`
		Refused []string        `json:"refused"`
	}{append([]receivedEvent{}, r.events...), append([]string{}, r.refused...)}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

// webhookKey is the HMAC key of a Standard Webhooks secret: the base64
// after "whsec_".
func webhookKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(secret), "whsec_")
	if !ok {
		return nil, errors.New(`not a Standard Webhooks secret ("whsec_" and base64)`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("the part after whsec_ is not base64: %v", err)
	}
	if len(key) == 0 {
		return nil, errors.New("empty key")
	}
	return key, nil
}

// verifyWebhook checks a post as the Standard Webhooks specification
// says: the signed content is "{webhook-id}.{webhook-timestamp}.{body}",
// the signature base64 of its HMAC-SHA256 under key; webhook-signature is
// a space-separated list of "v1,<signature>" of which one must match; the
// timestamp (Unix seconds) must be within tolerance of now.
func verifyWebhook(key []byte, id, ts, sigs string, body []byte, now time.Time, tolerance time.Duration) error {
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not Unix seconds", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp %s is %s from now", ts, d.Round(time.Second))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no v1 signature matches")
}
