package relay_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
)

// metric returns the value of one sample from /metrics, or 0 if absent.
func (e *testEnv) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get(e.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func greeting(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// TestHotReloadAddsAndRemovesCredentialsAndDomains changes the config as a
// Kubernetes Secret update does, while one client stays connected
// throughout.
func TestHotReloadAddsAndRemovesCredentialsAndDomains(t *testing.T) {
	opts := envOptions{secretMount: true, limits: "{authFailures: 100}"}
	e := startRelay(t, opts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A poll interval far beyond the test: only file events can trigger
	// the reloads below.
	e.srv.WatchConfig(ctx, time.Hour)

	steady := e.loggedIn(shopUser, shopPass)
	sendOK := func(what string) {
		t.Helper()
		if _, err := send(steady, "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", what)); err != nil {
			t.Fatalf("the connected client failed %s: %v", what, err)
		}
	}
	sendOK("before any reload")

	const newUser = "newbie.apps"
	added := opts
	added.hostname = "relay2.test"
	added.domains = fmt.Sprintf("  - {name: fresh.example.net, keys: [{selector: ed1, algorithm: Ed25519, privateKeyFile: %s/ed.pem}]}\n", e.dir)
	added.credentials = e.defaultCredentials() + fmt.Sprintf("  - {username: %s, passwordHash: %q, allowedSenders: [fresh.example.net]}\n", newUser, hashOf(t, "new-user-password"))
	e.swapSecret(e.configYAML(added))
	waitUntil(t, "the first reload", func() bool { return e.metric(t, `mailroom_relay_config_reloads_total{result="success"}`) == 1 })

	newbie := e.loggedIn(newUser, "new-user-password")
	id, err := send(newbie, "hello@fresh.example.net", []string{"x@example.net"}, simpleMessage("hello@fresh.example.net", "new domain"))
	if err != nil {
		t.Fatalf("the added credential and domain: %v", err)
	}
	if _, data := e.queued(id); !strings.Contains(data, "d=fresh.example.net") || !strings.Contains(data, "by relay2.test") {
		t.Fatalf("not signed for the new domain or not by the new hostname:\n%s", data)
	}
	if g := greeting(t, e.submissionAddr()); !strings.HasPrefix(g, "220 relay2.test ") {
		t.Fatalf("a new connection is greeted with %q", g)
	}
	sendOK("after the first reload")

	e.swapSecret(e.configYAML(opts))
	waitUntil(t, "the second reload", func() bool { return e.metric(t, `mailroom_relay_config_reloads_total{result="success"}`) == 2 })
	wantCode(t, e.dialStartTLS().Auth(sasl.NewPlainClient("", newUser, "new-user-password")), 535, "5.7.8")
	// The removed credential's open session cannot send any more either.
	wantCode(t, newbie.Mail("hello@fresh.example.net", nil), 530, "5.7.0")
	sendOK("after the credential was removed")

	// A broken file keeps the last good configuration and says why.
	e.swapSecret(strings.Replace(e.configYAML(opts), "allowedSenders: [example.com]", "allowedSenders: [nowhere.invalid]", 1))
	waitUntil(t, "the failed reload to be counted", func() bool { return e.metric(t, `mailroom_relay_config_reloads_total{result="failure"}`) == 1 })
	if !strings.Contains(e.logs.String(), "credentials[0].allowedSenders[0]") {
		t.Fatalf("the log does not say which field was wrong:\n%s", e.logs.String())
	}
	sendOK("after a failed reload")
	if _, err := send(e.loggedIn(shopUser, shopPass), "orders@example.com", []string{"y@example.net"}, simpleMessage("orders@example.com", "new session")); err != nil {
		t.Fatalf("a new session after a failed reload: %v", err)
	}
	if err := steady.Noop(); err != nil {
		t.Fatalf("the steady connection was dropped: %v", err)
	}
}

func TestSIGHUPStyleReloadOfAnUnchangedFileIsHarmless(t *testing.T) {
	e := startRelay(t, envOptions{})
	c := e.loggedIn(shopUser, shopPass)
	if err := e.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := send(c, "orders@example.com", []string{"x@example.net"}, simpleMessage("orders@example.com", "after")); err != nil {
		t.Fatal(err)
	}
}

// TestRenewedCertificateIsServedWithoutRestart: cert-manager renews the TLS
// Secret; new connections get the new certificate.
func TestRenewedCertificateIsServedWithoutRestart(t *testing.T) {
	e := startRelay(t, envOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.srv.WatchConfig(ctx, time.Hour)
	serial := func() string {
		c, err := tls.Dial("tcp", e.submissionsAddr(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	old := serial()
	certPEM, keyPEM := selfSigned(t)
	for name, b := range map[string][]byte{"tls.key": keyPEM, "tls.crt": certPEM} {
		tmp := filepath.Join(e.dir, name+".new")
		os.WriteFile(tmp, b, 0o600)
		if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the new certificate", func() bool { return serial() != old })
}
