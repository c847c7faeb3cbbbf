package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// apiSend sends one message through the relay's HTTP API the way an
// application configured from an SMTPCredential's Secret does: POST
// {API_URL}/v1/messages with a JSON message, the API key as a bearer
// token, TLS verified against the pool's CA (API_URL, API_KEY and
// API_CA_CRT: the Secret's api-url, api-key and ca.crt as env vars).
// Failed connections, 409 (the same key in flight), 429 and 5xx answers
// are retried with the same Idempotency-Key until -timeout, so a retry
// never queues twice. On 202 it prints "api-send: 202 " and the answer
// ({"id": queue id, "messageId"}).
func apiSend(args []string) error {
	fs := flag.NewFlagSet("api-send", flag.ContinueOnError)
	from := fs.String("from", "", "From: and envelope sender")
	to := fs.String("to", "", "recipient")
	subject := fs.String("subject", "e2e", "Subject:")
	text := fs.String("text", "Sent by an application pod through the HTTP API.", "text body")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	env, err := requireEnv("API_URL", "API_KEY", "API_CA_CRT")
	if err != nil {
		return err
	}
	roots, err := certPool(env, "API_CA_CRT")
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"from": *from, "to": []string{*to}, "subject": *subject, "text": *text})
	if err != nil {
		return err
	}
	var nonce [12]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	key := "e2e-" + hex.EncodeToString(nonce[:])
	url := strings.TrimSuffix(env["API_URL"], "/") + "/v1/messages"
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: roots}}}
	deadline := time.Now().Add(*timeout)
	for attempt := 1; ; attempt++ {
		status, answer, err := postOnce(c, url, env["API_KEY"], key, body)
		switch {
		case err == nil && status == http.StatusAccepted:
			fmt.Printf("api-send: 202 %s\n", bytes.TrimSpace(answer))
			fmt.Fprintf(os.Stderr, "api-send: POST %s accepted after %d attempts\n", url, attempt)
			return nil
		case err == nil && status != http.StatusConflict && status != http.StatusTooManyRequests && status < 500:
			return fmt.Errorf("POST %s: %d %s", url, status, answer)
		case err == nil:
			err = fmt.Errorf("%d %s", status, bytes.TrimSpace(answer))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("POST %s: giving up after %d attempts: %w", url, attempt, err)
		}
		fmt.Fprintf(os.Stderr, "attempt %d: %v; retrying\n", attempt, err)
		time.Sleep(time.Second)
	}
}

func postOnce(c *http.Client, url, apiKey, idempotencyKey string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Idempotency-Key", idempotencyKey)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, answer, err
}
