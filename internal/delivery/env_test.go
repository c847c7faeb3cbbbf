package delivery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/testutil/dnstest"
	"mailroom.io/mailroom/internal/testutil/promtest"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// Generous timeouts: the tests run on loaded 2-core machines. Only tests
// about timeouts shorten them.
var testTimeouts = delivery.Timeouts{Connect: 20 * time.Second, Command: 60 * time.Second, DataBlock: 60 * time.Second, FinalDot: 60 * time.Second}

const relayName = "relay.example.com"

// env is a little internet on loopback: a DNS server, receiving SMTP
// servers on 127.0.0.x sharing one port (the port override), a test CA.
type env struct {
	t    *testing.T
	DNS  *dnstest.Server
	CA   *smtpsink.CA
	Port int
	Reg  *prometheus.Registry
	Logs *logBuffer
	lns  map[string]net.Listener
}

// newEnv binds one port on each IP; sink and refuse then decide what
// listens there.
func newEnv(t *testing.T, ips ...string) *env {
	t.Helper()
	e := &env{t: t, DNS: dnstest.Start(t), CA: smtpsink.NewCA(t), Reg: prometheus.NewRegistry(), Logs: &logBuffer{}, lns: map[string]net.Listener{}}
	if len(ips) > 0 {
		for i, ln := range smtpsink.ListenShared(t, ips...) {
			e.lns[ips[i]] = ln
			e.Port = ln.Addr().(*net.TCPAddr).Port
		}
	}
	return e
}

// sink serves a receiving SMTP server on ip.
func (e *env) sink(ip string, opts smtpsink.Options) *smtpsink.Sink {
	e.t.Helper()
	ln, ok := e.lns[ip]
	if !ok {
		e.t.Fatalf("no listener on %s", ip)
	}
	delete(e.lns, ip)
	return smtpsink.Serve(e.t, ln, opts)
}

// refuse makes connections to ip fail: nothing listens.
func (e *env) refuse(ip string) {
	e.lns[ip].Close()
	delete(e.lns, ip)
}

// tlsSink is a sink offering STARTTLS with a certificate for name.
func (e *env) tlsSink(ip, name string, opts smtpsink.Options) *smtpsink.Sink {
	e.t.Helper()
	opts.TLS = e.CA.ServerTLS(e.t, name)
	opts.Hostname = name
	return e.sink(ip, opts)
}

func (e *env) resolver() *delivery.Resolver {
	e.t.Helper()
	r, err := delivery.NewResolver(delivery.ResolverOptions{Servers: []string{e.DNS.Addr}, Timeout: 5 * time.Second, Attempts: 2})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) options() delivery.Options {
	return delivery.Options{
		Hostname:   relayName,
		Resolver:   e.resolver(),
		RootCAs:    e.CA.Pool(),
		Port:       e.Port,
		Timeouts:   testTimeouts,
		Registerer: e.Reg,
		Logger:     slog.New(slog.NewJSONHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func (e *env) deliverer(opts delivery.Options) *delivery.Deliverer {
	e.t.Helper()
	d, err := delivery.New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { d.Close() })
	return d
}

// metric returns a sample's value from the registry (labels as name, value pairs).
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	return promtest.Value(e.t, e.Reg, name, labels...)
}

var msgSeq atomic.Int64

const testBody = "From: Shop <noreply@example.com>\r\n" +
	"To: alice@example.net\r\n" +
	"Subject: Your order\r\n" +
	"Message-ID: <order-42@example.com>\r\n" +
	"\r\n" +
	"Thank you for your order.\r\n" +
	".A line that starts with a dot survives dot-stuffing.\r\n"

// message is a queued message whose bytes Open returns afresh each time.
func message(from, body string) delivery.Message {
	data := []byte(body)
	return delivery.Message{
		ID:         fmt.Sprintf("msg%d", msgSeq.Add(1)),
		From:       from,
		Size:       int64(len(data)),
		ReceivedAt: time.Now(),
		Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
	}
}

func rcpts(addrs ...string) []delivery.Recipient {
	out := make([]delivery.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = delivery.Recipient{Address: a}
	}
	return out
}

func deliver(t *testing.T, d *delivery.Deliverer, msg delivery.Message, addrs ...string) []delivery.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := d.Deliver(ctx, msg, rcpts(addrs...))
	if len(res) != len(addrs) {
		t.Fatalf("%d results for %d recipients", len(res), len(addrs))
	}
	return res
}

// want checks a result's status and reason.
func want(t *testing.T, r delivery.Result, st delivery.Status, reason delivery.Reason) {
	t.Helper()
	if r.Status != st || r.Reason != reason {
		t.Errorf("%s: %s/%s (%s %s), want %s/%s", r.Recipient, r.Status, r.Reason, r.Code, r.Diagnostic(), st, reason)
	}
}

// eventually polls cond until it holds or the test's patience runs out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logBuffer collects JSON log records.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the records with the given message.
func (b *logBuffer) records(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(b.buf.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}
