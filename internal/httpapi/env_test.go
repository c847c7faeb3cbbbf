package httpapi_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	clocktesting "k8s.io/utils/clock/testing"

	"mailroom.io/mailroom/internal/apikey"
	"mailroom.io/mailroom/internal/certs"
	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/httpapi"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relay/password"
	"mailroom.io/mailroom/internal/testutil/dnstest"
)

// Test credentials: "shop" may send as example.com; "tight" as
// tight.example.com with one message a minute and two recipients.
const (
	shopUser  = "shop"
	shopPass  = "shop-password-0123456789abcdefghijkl"
	tightUser = "tight"
	tightPass = "tight-password-0123456789abcdefghijk"
)

// env is a relay running in-process (real SMTP intake, queue and
// suppression list) with the HTTP API served over TLS on loopback.
type env struct {
	t      *testing.T
	dir    string
	srv    *relay.Server
	q      *queue.Queue
	sup    *delivery.Suppressions
	dns    *dnstest.Server
	api    *httpapi.Server
	apiURL string
	pool   *x509.CertPool
	clock  *clocktesting.FakeClock
	// free is the free space the queue sees (Statfs).
	free            atomic.Uint64
	logs            *syncBuffer
	shopKey, oldKey string
	metrics         *relay.Metrics
	// client validates every exchange against openapi.yaml.
	client *http.Client
	checks *contractChecker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), logs: &syncBuffer{}, dns: dnstest.Start(t),
		clock: clocktesting.NewFakeClock(time.Now())}
	e.free.Store(1 << 40)
	key, err := dkim.Generate(dkim.Ed25519, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, _ := dkim.MarshalPrivateKey(key)
	writeFile(t, filepath.Join(e.dir, "dkim.pem"), pemKey)
	rec, err := dkim.RecordText(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"example.com", "tight.example.com"} {
		e.dns.Add(t, fmt.Sprintf("ed1._domainkey.%s. 300 IN TXT %q", d, rec))
	}
	ca, err := certs.NewCA(rand.Reader, "relay test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.Issue(rand.Reader, ca, []string{"relay.test"}, certs.Server, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.dir, "tls.crt"), leaf.Cert)
	writeFile(t, filepath.Join(e.dir, "tls.key"), leaf.Key)
	e.pool = x509.NewCertPool()
	e.pool.AppendCertsFromPEM(ca.Cert)

	e.shopKey, _ = apikey.New(shopUser)
	e.oldKey, _ = apikey.New(shopUser)
	hash := func(s string) string {
		h, err := password.HashToken(s)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	notAfter := e.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	cfg := fmt.Sprintf(`hostname: relay.test
listeners: {submission: "127.0.0.1:0", submissions: "127.0.0.1:0", http: "127.0.0.1:0"}
tls: {certFile: %[1]s/tls.crt, keyFile: %[1]s/tls.key}
limits: {maxMessageSize: 256Ki, authFailures: 3, authFailureWindow: 10m}
queue: {directory: %[1]s/queue, minFreeSpace: 1Mi}
delivery: {paused: true}
domains:
  - {name: example.com, keys: [{selector: ed1, algorithm: Ed25519, privateKeyFile: %[1]s/dkim.pem}]}
credentials:
  - username: %[2]s
    passwordHash: %[3]q
    apiKeyHash: %[4]q
    previousAPIKeyHashes: [{hash: %[5]q, notAfter: %[6]q}]
    allowedSenders: [example.com]
  - username: %[7]s
    passwordHash: %[8]q
    allowedSenders: [tight.example.com]
    limits: {messagesPerMinute: 1, recipientsPerMessage: 2}
`, e.dir, shopUser, hash(shopPass), hash(e.shopKey), hash(e.oldKey), notAfter, tightUser, hash(tightPass))
	cfgPath := filepath.Join(e.dir, "relay.yaml")
	writeFile(t, cfgPath, []byte(cfg))
	c, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(e.logs, nil))
	e.metrics = relay.NewMetrics()
	// The reserve is checked against Statfs, so a test can fill the disk.
	e.q, err = queue.Open(c.Queue.Directory, queue.Options{Logger: log, Reserve: c.Queue.MinFreeSpace.Value(),
		Statfs: func() (uint64, error) { return e.free.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = relay.New(relay.Options{Config: c, Queue: e.q, Logger: log, Metrics: e.metrics, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.sup, err = delivery.NewSuppressions(e.q.Suppressions(), 30*24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := delivery.NewResolver(delivery.ResolverOptions{Servers: []string{e.dns.Addr}, Timeout: 2 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.api = httpapi.New(httpapi.Options{Relay: e.srv, Queue: e.q, Suppressions: e.sup, Resolver: res, Logger: log,
		Registerer: e.metrics.Registry})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = e.api.Serve(ln) }()
	e.apiURL = "https://" + ln.Addr().String()
	e.checks = newContractChecker(t)
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: e.checks.wrap(&http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.pool, ServerName: "relay.test"}})}
	t.Cleanup(func() {
		_ = e.api.Shutdown(t.Context())
		<-served
		_ = e.srv.Shutdown(t.Context())
		_ = e.q.Close()
		if t.Failed() {
			t.Logf("relay log:\n%s", e.logs.String())
		}
	})
	return e
}

// request is one API call; contract false skips validating the request
// (not the response) against the document: the invalid inputs.
type request struct {
	method, path string
	contentType  string
	body         []byte
	user, pass   string // HTTP Basic
	bearer       string
	header       map[string]string
	invalid      bool
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %d %q: %v", r.status, r.body, err)
	}
}

// problem is the response as an RFC 9457 document.
func (r response) problem(t *testing.T) problemDoc {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json (status %d, %s)", ct, r.status, r.body)
	}
	var p problemDoc
	r.json(t, &p)
	return p
}

type problemDoc struct {
	Type, Title, Detail, EnhancedStatus, Field string
	Status, SMTPCode                           int
}

func (e *env) do(rq request) response {
	e.t.Helper()
	req, err := http.NewRequest(rq.method, e.apiURL+rq.path, bytes.NewReader(rq.body))
	if err != nil {
		e.t.Fatal(err)
	}
	if rq.contentType != "" {
		req.Header.Set("Content-Type", rq.contentType)
	}
	if rq.user != "" {
		req.SetBasicAuth(rq.user, rq.pass)
	}
	if rq.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+rq.bearer)
	}
	for k, v := range rq.header {
		req.Header.Set(k, v)
	}
	if rq.invalid {
		req.Header.Set(skipRequestCheck, "1")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// send posts a JSON message as shop (HTTP Basic).
func (e *env) send(msg any, header map[string]string) response {
	e.t.Helper()
	b, err := json.Marshal(msg)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(request{method: "POST", path: "/v1/messages", contentType: "application/json", body: b,
		user: shopUser, pass: shopPass, header: header})
}

// stored is the queued message as delivery sends it: the signatures, then
// the stored bytes.
func (e *env) stored(id string) (queue.Message, []byte) {
	e.t.Helper()
	m, ok := e.q.Get(id)
	if !ok {
		e.t.Fatalf("queue has no message %s", id)
	}
	rc, err := e.q.Open(id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatal(err)
	}
	return m, append([]byte(m.Header), b...)
}

// smtpClient is an authenticated STARTTLS session as user.
func (e *env) smtpClient(user, pass string) *smtp.Client {
	e.t.Helper()
	c, err := smtp.DialStartTLS(e.srv.Addr(relay.ListenerSubmission).String(), &tls.Config{RootCAs: e.pool, ServerName: "relay.test"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		e.t.Fatalf("AUTH %s: %v", user, err)
	}
	return c
}

const skipRequestCheck = "X-Test-Skip-Request-Check"

// contractChecker validates requests and responses against openapi.yaml
// with libopenapi-validator, failing the test on any mismatch.
type contractChecker struct {
	t *testing.T
	v validator.Validator
	n atomic.Int64
}

func newContractChecker(t *testing.T) *contractChecker {
	doc, err := libopenapi.NewDocument(httpapi.OpenAPI)
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("openapi.yaml: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("openapi.yaml is not a valid OpenAPI 3.1 document: %s: %s", e.Message, e.Reason)
		}
	}
	return &contractChecker{t: t, v: v}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *contractChecker) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		skipReq := req.Header.Get(skipRequestCheck) != ""
		req.Header.Del(skipRequestCheck)
		var reqBody []byte
		if req.Body != nil {
			reqBody, _ = io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		resp, err := next.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		respBody, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		vreq := req.Clone(req.Context())
		vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
		if !skipReq {
			if ok, errs := c.v.ValidateHttpRequestSync(vreq); !ok {
				for _, e := range errs {
					c.t.Errorf("request %s %s does not match openapi.yaml: %s: %s", req.Method, req.URL.Path, e.Message, e.Reason)
				}
			}
			vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		vresp := *resp
		vresp.Body = io.NopCloser(bytes.NewReader(respBody))
		if ok, errs := c.v.ValidateHttpResponse(vreq, &vresp); !ok {
			for _, e := range errs {
				c.t.Errorf("response %d to %s %s does not match openapi.yaml: %s: %s (%s)", resp.StatusCode, req.Method, req.URL.Path, e.Message, e.Reason, respBody)
			}
		}
		c.n.Add(1)
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		return resp, nil
	})
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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
