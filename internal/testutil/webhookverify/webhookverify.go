// Package webhookverify checks Standard Webhooks signatures with an
// implementation independent of the relay's: verify_webhook.py, which uses
// only Python's hmac, hashlib and base64 over the spec's signed content
// ("{id}.{timestamp}.{body}").
package webhookverify

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

//go:embed verify_webhook.py
var script []byte

// Post is one webhook request as a receiver saw it.
type Post struct {
	Header http.Header
	Body   []byte
}

// Verify checks posts signed with secret ("whsec_…") at now, with the
// spec's 5-minute timestamp tolerance, and returns the script's verdict
// per post: "ok" or why not.
func Verify(t *testing.T, secret string, now time.Time, posts []Post) []string {
	t.Helper()
	type in struct {
		Headers map[string]string `json:"headers"`
		Body    []byte            `json:"body"`
	}
	req := struct {
		Secret     string `json:"secret"`
		Now        int64  `json:"now"`
		Tolerance  int    `json:"tolerance"`
		Deliveries []in   `json:"deliveries"`
	}{Secret: secret, Now: now.Unix(), Tolerance: 300}
	for _, p := range posts {
		h := map[string]string{}
		for k := range p.Header {
			h[k] = p.Header.Get(k)
		}
		req.Deliveries = append(req.Deliveries, in{Headers: h, Body: p.Body})
	}
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "verify_webhook.py")
	if err := os.WriteFile(path, script, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", path)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("verify_webhook.py: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}
