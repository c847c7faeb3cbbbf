package peer_test

import (
	"bytes"
	"context"
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
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mailroom.io/mailroom/internal/certs"
	"mailroom.io/mailroom/internal/peer"
	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/testutil/promtest"
)

// CA is a throwaway pool CA, made by the operator's own issuer.
type CA struct{ certs.Pair }

func NewCA(t *testing.T) *CA {
	t.Helper()
	p, err := certs.NewCA(rand.Reader, "pool CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &CA{p}
}

// Issue writes a member certificate (serverAuth and clientAuth, for
// localhost) as the operator issues it and returns the peer section
// pointing at it.
func (ca *CA) Issue(t *testing.T, dir, name string) *config.Peer {
	t.Helper()
	leaf, err := certs.Issue(rand.Reader, ca.Pair, []string{name, "localhost"}, certs.Server|certs.Client, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &config.Peer{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Self: name}
	for f, b := range map[string][]byte{p.CAFile: ca.Cert, p.CertFile: leaf.Cert, p.KeyFile: leaf.Key} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

type member struct {
	name string
	q    *queue.Queue
	node *peer.Node
	ln   net.Listener
	reg  *prometheus.Registry
	cfg  *config.Config
}

func startMember(t *testing.T, ca *CA, name string, ln net.Listener, addrs []string, drain ...string) *member {
	t.Helper()
	dir := t.TempDir()
	q, err := queue.Open(filepath.Join(dir, "queue"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	p := ca.Issue(t, dir, name)
	p.Addresses = addrs
	cfg := &config.Config{Peer: p, Drain: drain}
	reg := prometheus.NewRegistry()
	node, err := peer.New(peer.Options{Spool: q, Registerer: reg, Backoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go node.Serve(ln)
	t.Cleanup(func() { ln.Close() })
	return &member{name: name, q: q, node: node, ln: ln, reg: reg, cfg: cfg}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// addr is ln's address by the name in the members' certificates.
func addr(ln net.Listener) string {
	return fmt.Sprintf("localhost:%d", ln.Addr().(*net.TCPAddr).Port)
}

func enqueue(t *testing.T, q *queue.Queue, i int) string {
	t.Helper()
	w, err := q.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", i*50000))
	io.WriteString(w, body)
	m := queue.Message{From: "app@example.com", ReceivedAt: time.Now().Add(-time.Duration(i) * time.Hour).UTC().Truncate(time.Second),
		Recipients: []queue.Recipient{{Address: "a@example.net", State: "delivered"}, {Address: "b@example.net", Attempts: 2, LastResponse: "451 later", Notify: []string{"FAILURE"}}},
		Header:     "DKIM-Signature: v=1; test\r\n", EnvelopeID: fmt.Sprintf("env-%d", i), Attempts: 2, DelayWarned: true}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	return w.ID()
}

func contents(t *testing.T, q *queue.Queue, id string) (queue.Message, string) {
	t.Helper()
	m, ok := q.Get(id)
	if !ok {
		t.Fatalf("%s not queued", id)
	}
	r, err := q.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return m, string(b)
}

// TestDrainHandsEveryMessageToTheMemberThatIsNotDraining: A drains, B
// takes; C (also draining) and a dead address are skipped. The envelope,
// per-recipient state, DSN parameters, arrival time and bytes arrive
// intact; A is empty afterwards.
func TestDrainHandsEveryMessageToTheMemberThatIsNotDraining(t *testing.T) {
	ca := NewCA(t)
	la, lb, lc := listen(t), listen(t), listen(t)
	dead := listen(t)
	deadAddr := addr(dead)
	dead.Close()
	addrs := []string{addr(la), addr(lb), addr(lc), deadAddr}
	a := startMember(t, ca, "relay-0", la, addrs, "relay-0", "relay-2")
	b := startMember(t, ca, "relay-1", lb, addrs, "relay-0", "relay-2")
	c := startMember(t, ca, "relay-2", lc, addrs, "relay-0", "relay-2")

	want := map[string]string{} // envelope id -> bytes
	var sent []queue.Message
	for i := range 4 {
		id := enqueue(t, a.q, i)
		m, body := contents(t, a.q, id)
		want[m.EnvelopeID] = body
		sent = append(sent, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.node.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if a.q.Len() != 0 || c.q.Len() != 0 || b.q.Len() != 4 {
		t.Fatalf("after the drain: A %d, B %d, C %d messages", a.q.Len(), b.q.Len(), c.q.Len())
	}
	for _, orig := range sent {
		var got queue.Message
		var body string
		for _, m := range b.q.Messages() {
			if m.EnvelopeID == orig.EnvelopeID {
				got, body = contents(t, b.q, m.ID)
			}
		}
		if body != want[orig.EnvelopeID] {
			t.Errorf("%s: bytes differ after the handover", orig.EnvelopeID)
		}
		if !got.ReceivedAt.Equal(orig.ReceivedAt) || got.From != orig.From || got.Attempts != 2 || !got.DelayWarned ||
			len(got.Recipients) != 2 || got.Recipients[0].State != "delivered" || got.Recipients[1].Attempts != 2 ||
			got.Recipients[1].Notify[0] != "FAILURE" || !got.Expires.Equal(orig.Expires) {
			t.Errorf("%s: state not preserved:\n got %+v\nwant %+v", orig.EnvelopeID, got, orig)
		}
	}
	if n := promtest.Value(t, a.reg, "mailroom_peer_handover_total", "result", "handed_over"); n != 4 {
		t.Errorf("handed_over = %v", n)
	}
	if n := promtest.Value(t, b.reg, "mailroom_peer_received_total", "result", "imported"); n != 4 {
		t.Errorf("imported = %v", n)
	}
}

// client is an HTTPS client of the pool with its own member certificate.
func client(t *testing.T, ca *CA) *http.Client {
	t.Helper()
	p := ca.Issue(t, t.TempDir(), "tester")
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.Cert)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
}

func post(t *testing.T, hc *http.Client, addr, key string, e queue.Exported, body []byte) (int, string) {
	t.Helper()
	var b bytes.Buffer
	head, _ := json.Marshal(e)
	b.Write(head)
	b.WriteByte('\n')
	b.Write(body)
	req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/v1/peer/messages", &b)
	req.Header.Set(peer.OriginKeyHeader, key)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestReceiverIsIdempotentAuthenticatedAndRefusesWhileDraining: the same
// origin key twice queues one copy; a client certificate from another CA
// (or none) gets no answer; a draining member answers 409.
func TestReceiverIsIdempotentAuthenticatedAndRefusesWhileDraining(t *testing.T) {
	ca := NewCA(t)
	lb := listen(t)
	b := startMember(t, ca, "relay-1", lb, nil)
	src, err := queue.Open(filepath.Join(t.TempDir(), "q"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	id := enqueue(t, src, 1)
	e, r, err := src.Export(id)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r)
	r.Close()

	hc := client(t, ca)
	baddr := addr(lb)
	code1, out1 := post(t, hc, baddr, "relay-0/"+id, e, body)
	code2, out2 := post(t, hc, baddr, "relay-0/"+id, e, body)
	if code1 != 200 || code2 != 200 || !strings.Contains(out2, `"duplicate":true`) || b.q.Len() != 1 {
		t.Fatalf("first %d %s, retry %d %s; %d queued, want 1", code1, out1, code2, out2, b.q.Len())
	}
	if code, out := post(t, hc, baddr, "relay-0/short", queue.Exported{Format: e.Format, Message: e.Message, BodySize: e.BodySize + 5}, body); code != 400 {
		t.Fatalf("short body: %d %s", code, out)
	}

	other := client(t, NewCA(t))
	other.Transport.(*http.Transport).TLSClientConfig.RootCAs = hc.Transport.(*http.Transport).TLSClientConfig.RootCAs
	if _, err := other.Get("https://" + baddr + "/v1/peer/info"); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: hc.Transport.(*http.Transport).TLSClientConfig.RootCAs}}}
	if _, err := anon.Get("https://" + baddr + "/v1/peer/info"); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}

	b.cfg.Drain = []string{"relay-1"}
	if err := b.node.Apply(b.cfg); err != nil {
		t.Fatal(err)
	}
	if code, _ := post(t, hc, baddr, "relay-0/other", e, body); code != http.StatusConflict || b.q.Len() != 1 {
		t.Fatalf("draining member answered %d; %d queued", code, b.q.Len())
	}
	resp, err := hc.Get("https://" + baddr + "/v1/peer/info")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(info) != `{"name":"relay-1","draining":true}`+"\n" {
		t.Fatalf("info %s", info)
	}
}

// TestDrainWaitsForAMemberAndStopsWithItsContext: with nobody to take the
// mail, Drain keeps it and returns when its context ends.
func TestDrainWaitsForAMemberAndStopsWithItsContext(t *testing.T) {
	ca := NewCA(t)
	la := listen(t)
	a := startMember(t, ca, "relay-0", la, []string{addr(la)}, "relay-0")
	enqueue(t, a.q, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := a.node.Drain(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Drain with no member: %v", err)
	}
	if a.q.Len() != 1 {
		t.Fatal("the message left with nobody to take it")
	}
}
