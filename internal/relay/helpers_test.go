package relay_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
	"k8s.io/utils/clock"

	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/relay/config"
)

// Fixed test credentials. Passwords are hashed at bcrypt's minimum cost to
// keep the suite fast; the relay treats every cost alike.
const (
	shopUser = "shop.shop"
	shopPass = "s3cret-shop-password"
	bulkUser = "bulk.news"
	bulkPass = "bulk-password-2"
)

var (
	hashOnce sync.Once
	hashes   map[string]string
)

func hashOf(t testing.TB, pw string) string {
	t.Helper()
	hashOnce.Do(func() {
		hashes = map[string]string{}
		for _, p := range []string{shopPass, bulkPass, "new-user-password"} {
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				panic(err)
			}
			hashes[p] = string(h)
		}
	})
	h, ok := hashes[pw]
	if !ok {
		t.Fatalf("no hash prepared for that password")
	}
	return h
}

// keys are generated once per test binary: RSA generation is slow on a
// loaded machine.
var (
	keyOnce sync.Once
	rsaKey  crypto.Signer
	edKey   crypto.Signer
)

func dkimKeys(t testing.TB) (rsa2048, ed25519 crypto.Signer) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if rsaKey, err = dkim.Generate(dkim.RSA2048, rand.Reader); err != nil {
			panic(err)
		}
		if edKey, err = dkim.Generate(dkim.Ed25519, rand.Reader); err != nil {
			panic(err)
		}
	})
	return rsaKey, edKey
}

// testEnv is a relay running in-process with its files in a temp dir.
type testEnv struct {
	t        *testing.T
	dir      string
	cfgPath  string
	srv      *relay.Server
	q        *queue.Queue
	logs     *syncBuffer
	pool     *x509.CertPool
	http     *httptest.Server
	shutdown func()

	mount     string
	secretGen int
}

// envOptions describe the relay's configuration.
type envOptions struct {
	extra       string // YAML appended to the base config (top-level keys)
	limits      string // YAML body of "limits:" (flow style)
	credentials string // YAML list items for "credentials:"; default: shop and bulk
	queueDir    string
	minFree     string
	hostname    string
	domains     string // YAML list items appended to "domains:"
	// secretMount serves the config the way a mounted Kubernetes Secret
	// does: through a "..data" symlink (see swapSecret).
	secretMount bool
	// clock is the relay's clock (previous passwords' notAfter); nil: real.
	clock clock.PassiveClock
}

const baseDomains = `domains:
  - name: example.com
    keys:
      - {selector: rsa1, algorithm: RSA2048, privateKeyFile: %[1]s/rsa.pem}
      - {selector: ed1, algorithm: Ed25519, privateKeyFile: %[1]s/ed.pem}
  - name: news.example.org
    keys:
      - {selector: ed1, algorithm: Ed25519, privateKeyFile: %[1]s/ed.pem}
`

func (e *testEnv) defaultCredentials() string {
	return fmt.Sprintf(`  - {username: %s, passwordHash: %q, allowedSenders: [example.com]}
  - {username: %s, passwordHash: %q, allowedSenders: [news.example.org, ceo@example.com], limits: {recipientsPerMessage: 3}}
`, shopUser, hashOf(e.t, shopPass), bulkUser, hashOf(e.t, bulkPass))
}

func (e *testEnv) configYAML(o envOptions) string {
	creds := o.credentials
	if creds == "" {
		creds = e.defaultCredentials()
	}
	qdir := o.queueDir
	if qdir == "" {
		qdir = filepath.Join(e.dir, "queue")
	}
	minFree := o.minFree
	if minFree == "" {
		minFree = "1Mi"
	}
	limits := o.limits
	if limits == "" {
		limits = "{}"
	}
	hostname := o.hostname
	if hostname == "" {
		hostname = "relay.test"
	}
	return fmt.Sprintf(`hostname: `+hostname+`
listeners: {submission: "127.0.0.1:0", submissions: "127.0.0.1:0", http: "127.0.0.1:0"}
tls: {certFile: %[1]s/tls.crt, keyFile: %[1]s/tls.key}
limits: %[2]s
queue: {directory: %[3]s, minFreeSpace: %[4]s}
delivery: {paused: true}
`, e.dir, limits, qdir, minFree) + fmt.Sprintf(baseDomains, e.dir) + o.domains + "credentials:\n" + creds + o.extra
}

func startRelay(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: t.TempDir(), logs: &syncBuffer{}}
	e.writeKeyFiles()
	e.cfgPath = filepath.Join(e.dir, "relay.yaml")
	if o.secretMount {
		e.mount = filepath.Join(e.dir, "secret")
		os.MkdirAll(e.mount, 0o755)
		e.swapSecret(e.configYAML(o))
		if err := os.Symlink(filepath.Join("..data", "relay.yaml"), filepath.Join(e.mount, "relay.yaml")); err != nil {
			t.Fatal(err)
		}
		e.cfgPath = filepath.Join(e.mount, "relay.yaml")
	} else if err := os.WriteFile(e.cfgPath, []byte(e.configYAML(o)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(e.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := relay.NewMetrics()
	e.q, err = queue.Open(cfg.Queue.Directory, queue.Options{Logger: log, OnCommit: m.ObserveCommit})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = relay.New(relay.Options{Config: cfg, ConfigPath: e.cfgPath, Queue: e.q, Logger: log, Metrics: m, Clock: o.clock})
	if err != nil {
		e.q.Close()
		t.Fatal(err)
	}
	e.http = httptest.NewServer(e.srv.Handler())
	var once sync.Once
	e.shutdown = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			e.srv.Shutdown(ctx)
			e.http.Close()
			e.q.Close()
		})
	}
	t.Cleanup(func() {
		e.shutdown()
		if t.Failed() {
			t.Logf("relay log:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *testEnv) writeKeyFiles() {
	t := e.t
	rk, ek := dkimKeys(t)
	for name, k := range map[string]crypto.Signer{"rsa.pem": rk, "ed.pem": ek} {
		b, err := dkim.MarshalPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	certPEM, keyPEM := selfSigned(t)
	os.WriteFile(filepath.Join(e.dir, "tls.crt"), certPEM, 0o600)
	os.WriteFile(filepath.Join(e.dir, "tls.key"), keyPEM, 0o600)
	e.pool = x509.NewCertPool()
	e.pool.AppendCertsFromPEM(certPEM)
}

func selfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "relay.test"},
		DNSNames:     []string{"relay.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func (e *testEnv) submissionAddr() string {
	return e.srv.Addr(relay.ListenerSubmission).String()
}
func (e *testEnv) submissionsAddr() string {
	return e.srv.Addr(relay.ListenerSubmissions).String()
}
func (e *testEnv) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: e.pool, ServerName: "relay.test"}
}

// dialStartTLS connects to 587 and upgrades, as a go-smtp client.
func (e *testEnv) dialStartTLS() *smtp.Client {
	e.t.Helper()
	c, err := smtp.DialStartTLS(e.submissionAddr(), e.tlsConfig())
	if err != nil {
		e.t.Fatalf("STARTTLS: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *testEnv) dialImplicit() *smtp.Client {
	e.t.Helper()
	c, err := smtp.DialTLS(e.submissionsAddr(), e.tlsConfig())
	if err != nil {
		e.t.Fatalf("implicit TLS: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *testEnv) dialPlain() *smtp.Client {
	e.t.Helper()
	c, err := smtp.Dial(e.submissionAddr())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// loggedIn returns a STARTTLS client authenticated with PLAIN.
func (e *testEnv) loggedIn(user, pass string) *smtp.Client {
	e.t.Helper()
	c := e.dialStartTLS()
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		e.t.Fatalf("AUTH PLAIN as %s: %v", user, err)
	}
	return c
}

// send runs one transaction and returns the final reply's error (nil: 250)
// and the queue id from the reply text.
func send(c *smtp.Client, from string, to []string, msg string) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	m := queuedAs.FindStringSubmatch(resp.StatusText)
	if m == nil {
		return "", fmt.Errorf("unexpected 250 text %q", resp.StatusText)
	}
	return m[1], nil
}

var queuedAs = regexp.MustCompile(`^2\.0\.0 OK: queued as ([0-9a-v]{16})$`)

// wantCode asserts err is an SMTP reply with code and enhanced code.
func wantCode(t *testing.T, err error, code int, enhanced string) *smtp.SMTPError {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want SMTP reply %d %s", err, code, enhanced)
	}
	got := fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	if se.Code != code || got != enhanced {
		t.Fatalf("got %d %s %q, want %d %s", se.Code, got, se.Message, code, enhanced)
	}
	return se
}

func simpleMessage(from, subject string) string {
	return "From: Shop <" + from + ">\r\nTo: Customer <customer@example.net>\r\nSubject: " + subject +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\nyour order shipped.\r\n"
}

// queued returns the stored message (as it will be delivered) by id.
func (e *testEnv) queued(id string) (queue.Message, string) {
	e.t.Helper()
	m, ok := e.q.Get(id)
	if !ok {
		e.t.Fatalf("message %s is not in the queue", id)
	}
	r, err := e.q.Open(id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return m, string(b)
}

// swapSecret replaces the config the way the kubelet updates a mounted
// Secret: the content goes into a new timestamped directory, then the
// "..data" symlink is atomically renamed to point at it.
func (e *testEnv) swapSecret(content string) {
	e.t.Helper()
	e.secretGen++
	ts := filepath.Join(e.mount, fmt.Sprintf("..2026_11_25_00_00_%02d.%d", e.secretGen, time.Now().UnixNano()))
	if err := os.Mkdir(ts, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "relay.yaml"), []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	tmp := filepath.Join(e.mount, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.mount, "..data")); err != nil {
		e.t.Fatal(err)
	}
}

// requireTool finds a Debian-packaged peer, installing the test
// dependencies if it is missing; a missing tool fails the test.
func requireTool(t testing.TB, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	root := repoRoot(t)
	out, err := exec.Command("bash", filepath.Join(root, "hack", "install-test-deps.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("%s is missing and hack/install-test-deps.sh failed: %v\n%s", path, err, out)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is still missing after hack/install-test-deps.sh", path)
	}
	return path
}

// systemPython is Debian's interpreter, which has smtplib's TLS and dkimpy;
// a pyenv python3 earlier on PATH lacks dkimpy.
func systemPython(t testing.TB) string {
	t.Helper()
	py := requireTool(t, "/usr/bin/python3")
	if err := exec.Command(py, "-c", "import dkim, dns.resolver").Run(); err != nil {
		out, err := exec.Command("bash", filepath.Join(repoRoot(t), "hack", "install-test-deps.sh")).CombinedOutput()
		if err != nil || exec.Command(py, "-c", "import dkim, dns.resolver").Run() != nil {
			t.Fatalf("dkimpy and dnspython (Debian python3-dkim, python3-dnspython) are missing for %s: %v\n%s", py, err, out)
		}
	}
	return py
}

func repoRoot(t testing.TB) string {
	t.Helper()
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func netDialer(localIP string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 30 * time.Second}
}
