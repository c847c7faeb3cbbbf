package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"mailroom.io/mailroom/internal/relay/password"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func tokenHash(t *testing.T) string {
	t.Helper()
	h, err := password.HashToken(strings.Repeat("z", 43))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// writeShards writes shard files into dir and returns the main file that
// includes them.
func writeShards(t *testing.T, dir string, shards ...string) (main string, files []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString(minimal + "revision: 42\ninclude:\n")
	for i, s := range shards {
		f := filepath.Join(dir, fmt.Sprintf("shard-%d.yaml", i))
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		fmt.Fprintf(&b, "  - {file: %s, sha256: %s}\n", f, sum([]byte(s)))
	}
	return b.String(), files
}

func TestShardsAreMergedAndDigestCoversThem(t *testing.T) {
	dir := t.TempDir()
	h := tokenHash(t)
	s0 := "domains:\n- {name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k/dkim.example.com.s1.pem}]}\n"
	s1 := fmt.Sprintf("credentials:\n- {username: shop.shop, passwordHash: %q, allowedSenders: [example.com]}\n", h)
	main, _ := writeShards(t, dir, s0, s1)
	c, err := Parse([]byte(main))
	if err != nil {
		t.Fatal(err)
	}
	if c.Revision != 42 || len(c.Domains) != 1 || len(c.Credentials) != 1 || c.Credentials[0].PasswordHash != h {
		t.Fatalf("merged config: %+v", c)
	}
	want := ComputeDigest([]byte(main), []string{sum([]byte(s0)), sum([]byte(s1))})
	if c.Digest != want || len(c.Digest) != 64 {
		t.Fatalf("digest %q, want %q", c.Digest, want)
	}
	if got := c.Files(); len(got) != 2 || got[0] != filepath.Join(dir, "shard-0.yaml") {
		t.Fatalf("Files() = %v", got)
	}
	// A credential in a shard may name a domain from another shard; the
	// same credential in a main file without shards is an error.
	plain, err := Parse([]byte(minimal))
	if err != nil || plain.Revision != 0 || plain.Digest != ComputeDigest([]byte(minimal), nil) {
		t.Fatalf("single file: %v %+v", err, plain)
	}
}

func TestMissingOrChangingShardIsInconsistentNotInvalid(t *testing.T) {
	dir := t.TempDir()
	main, files := writeShards(t, dir, "domains: []\n", "credentials: []\n")
	if err := os.WriteFile(files[1], []byte("credentials: [] # newer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Parse([]byte(main))
	if !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "include[1].sha256: ") {
		t.Fatalf("changed shard: %v", err)
	}
	os.Remove(files[0])
	_, err = Parse([]byte(main))
	if !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "include[0].file: ") {
		t.Fatalf("missing shard: %v", err)
	}
}

func TestShardErrorsNameFileAndIndex(t *testing.T) {
	dir := t.TempDir()
	h := tokenHash(t)
	dom := "domains:\n- {name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k/a.pem}]}\n"
	cred := fmt.Sprintf("- {username: app, passwordHash: %q, allowedSenders: [example.com]}\n", h)
	main, files := writeShards(t, dir, dom+"credentials:\n"+cred, "credentials:\n"+cred+cred)
	_, err := Parse([]byte(main))
	if err == nil || errors.Is(err, ErrInconsistent) {
		t.Fatalf("duplicates accepted or misclassified: %v", err)
	}
	for _, want := range []string{
		fmt.Sprintf("include[1](%s).credentials[0].username: Duplicate value: \"app\": also at include[0](%s).credentials[0]", files[1], files[0]),
		fmt.Sprintf("include[1](%s).credentials[1].username: Duplicate value", files[1]),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}

	// Strict: a shard holds only domains and credentials.
	main, _ = writeShards(t, t.TempDir(), "hostname: other.example.com\n")
	if _, err := Parse([]byte(main)); err == nil || !strings.Contains(err.Error(), "include[0](") || !strings.Contains(err.Error(), "hostname") {
		t.Fatalf("unknown field in shard: %v", err)
	}

	for _, tc := range []struct{ inc, want string }{
		{"[{file: relative.yaml, sha256: " + strings.Repeat("a", 64) + "}]", "include[0].file: Invalid value: \"relative.yaml\": must be an absolute path"},
		{"[{file: /x.yaml, sha256: ABC}]", "include[0].sha256: Invalid value"},
		{"[{file: /x.yaml, sha256: " + strings.Repeat("a", 64) + "}, {file: /x.yaml, sha256: " + strings.Repeat("a", 64) + "}]", "include[1].file: Duplicate value"},
	} {
		_, err := Parse([]byte(minimal + "include: " + tc.inc + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("include %s: %v, want %q", tc.inc, err, tc.want)
		}
	}
}

func TestPreviousPasswordHashes(t *testing.T) {
	h := tokenHash(t)
	base := minimal + `domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k/a.pem}]}]
credentials:
- username: app
  passwordHash: "` + h + `"
  allowedSenders: [example.com]
`
	c, err := Parse([]byte(base + "  previousPasswordHashes: [{hash: \"" + h + "\", notAfter: \"2026-12-01T10:00:00Z\"}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Credentials[0].PreviousPasswordHashes[0].NotAfter.Time; !got.Equal(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("notAfter %v", got)
	}
	_, err = Parse([]byte(base + "  previousPasswordHashes: [{hash: plaintext}, {hash: \"" + h + "\"}]\n"))
	for _, want := range []string{"credentials[0].previousPasswordHashes[0].hash: Invalid value", "credentials[0].previousPasswordHashes[1].notAfter: Required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "plaintext") {
		t.Errorf("error repeats the hash: %v", err)
	}
}

func TestShutdownBudgetIsTheSumOfThePhases(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.ShutdownDelay.Duration != 5*time.Second {
		t.Fatalf("shutdownDelay default %v", c.Limits.ShutdownDelay)
	}
	if got := ShutdownBudget(c); got != 5*time.Second+25*time.Second+20*time.Second+ShutdownMargin {
		t.Fatalf("default budget %v", got)
	}
	c, err = Parse([]byte(minimal + "limits: {shutdownDelay: 0s, shutdownGrace: 2s}\ndelivery: {shutdownGrace: 3s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := ShutdownBudget(c); got != 5*time.Second+ShutdownMargin {
		t.Fatalf("budget %v", got)
	}
	if _, err := Parse([]byte(minimal + "limits: {shutdownDelay: -1s}\n")); err == nil || !strings.Contains(err.Error(), "limits.shutdownDelay") {
		t.Fatalf("negative delay: %v", err)
	}
}

func TestProxyProtocolPeerAndDrain(t *testing.T) {
	t.Setenv(PodNameEnv, "relay-1")
	c, err := Parse([]byte(minimal + `proxyProtocol: {trustedCIDRs: [10.0.0.0/8, "fd00::/8"]}
peer: {caFile: /p/ca.crt, certFile: /p/tls.crt, keyFile: /p/tls.key, addresses: ["relay-0.relay:8443", "relay-1.relay:8443"]}
drain: [relay-1]
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.Peer != ":8443" || c.Peer.Self != "relay-1" || !c.Draining() {
		t.Fatalf("peer defaults: %+v %+v draining=%v", c.Listeners, c.Peer, c.Draining())
	}
	if c2, _ := Parse([]byte(minimal)); c2.Listeners.Peer != "" || c2.Draining() {
		t.Fatalf("no peer section: %+v", c2.Listeners)
	}
	t.Setenv(PodNameEnv, "")
	_, err = Parse([]byte(minimal + `proxyProtocol: {trustedCIDRs: [10.0.0.0]}
peer: {caFile: /p/ca.crt, addresses: [nohost]}
drain: [a, a, ""]
`))
	for _, want := range []string{"proxyProtocol.trustedCIDRs[0]: Invalid value", "peer.certFile: Required", "peer.keyFile: Required",
		"peer.addresses[0]: Invalid value", "drain[1]: Duplicate", "drain[2]: Required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nlacks %q", err, want)
		}
	}
	// peer.self is the pod's: Validate (which the operator runs on what
	// it renders) accepts it empty, Parse (the relay) does not.
	noSelf := minimal + "peer: {caFile: /p/ca.crt, certFile: /p/tls.crt, keyFile: /p/tls.key}\n"
	if _, err := Parse([]byte(noSelf)); err == nil || !strings.Contains(err.Error(), "peer.self: Required") || !strings.Contains(err.Error(), "MAILROOM_POD_NAME") {
		t.Errorf("no peer.self: %v", err)
	}
	var c3 Config
	if err := yaml.UnmarshalStrict([]byte(noSelf), &c3); err != nil {
		t.Fatal(err)
	}
	c3.SetDefaults()
	if err := c3.Validate(); err != nil {
		t.Errorf("Validate without peer.self: %v", err)
	}
	if _, err := Parse([]byte(minimal + "drain: [relay-0]\n")); err == nil || !strings.Contains(err.Error(), "peer: Required") {
		t.Errorf("drain without peer: %v", err)
	}
}
