package main_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/queue"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// relayBinary builds cmd/relay once per test run.
func relayBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "relay-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "relay")
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		out, err := exec.Command(gobin, "build", "-o", binPath, "mailroom.io/mailroom/cmd/relay").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// relayProc is the relay binary running as a child process.
type relayProc struct {
	t          *testing.T
	dir        string
	cfgPath    string
	queueDir   string
	smtpAddr   string
	httpAddr   string
	adminAddr  string
	env        []string // added to the child's environment
	cmd        *exec.Cmd
	log        *lockedBuffer
	exited     chan struct{}
	exitErr    error
	startCount int
}

// newRelayFiles writes keys, certificate and a config in which 127.0.0.1
// is a trusted network (so load needs no TLS handshake per session).
func newRelayFiles(t *testing.T) *relayProc {
	t.Helper()
	return newRelayWithDelivery(t, "{paused: true}", "")
}

// newRelayWithDelivery is newRelayFiles with the given delivery section
// (YAML flow map) and extra top-level YAML.
func newRelayWithDelivery(t *testing.T, delivery, extra string) *relayProc {
	t.Helper()
	dir := t.TempDir()
	key, err := dkim.Generate(dkim.Ed25519, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, _ := dkim.MarshalPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "dkim.pem"), pemKey, 0o600)
	certPEM, keyPEM := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600)
	p := &relayProc{t: t, dir: dir, queueDir: filepath.Join(dir, "queue"),
		smtpAddr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		httpAddr:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		adminAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	cfg := fmt.Sprintf(`hostname: relay.test
listeners: {submission: %q, submissions: "127.0.0.1:%d", http: %q, admin: %q}
tls: {certFile: %s/tls.crt, keyFile: %s/tls.key}
limits: {shutdownGrace: 20s}
trustedNetworks:
  - {name: loopback, cidrs: [127.0.0.1/32], allowedSenders: [example.com]}
domains:
  - {name: example.com, keys: [{selector: ed1, algorithm: Ed25519, privateKeyFile: %s/dkim.pem}]}
queue: {directory: %s, minFreeSpace: 1Mi}
delivery: %s
%s`, p.smtpAddr, freePort(t), p.httpAddr, p.adminAddr, dir, dir, dir, p.queueDir, delivery, extra)
	p.cfgPath = filepath.Join(dir, "relay.yaml")
	os.WriteFile(p.cfgPath, []byte(cfg), 0o600)
	return p
}

func (p *relayProc) start() {
	t := p.t
	t.Helper()
	p.startCount++
	p.log = &lockedBuffer{}
	p.cmd = exec.Command(relayBinary(t), "--config", p.cfgPath, "--log-format", "text")
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.exited:
			t.Fatalf("relay exited during start: %v\n%s", p.exitErr, p.log.String())
		default:
		}
		if resp, err := http.Get("http://" + p.httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay not ready in 60s:\n%s", p.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *relayProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

func (p *relayProc) wait() error {
	select {
	case <-p.exited:
		return p.exitErr
	case <-time.After(90 * time.Second):
		p.t.Fatalf("relay did not exit:\n%s", p.log.String())
		return nil
	}
}

// crashLoad sends messages over many concurrent sessions and remembers
// which ones were acknowledged.
type crashLoad struct {
	addr string
	mu   sync.Mutex
	sent map[string][]byte // test id -> exact message bytes sent
	ack  map[string]string // test id -> queue id from the 250 reply
	seq  atomic.Int64
}

func (l *crashLoad) message(id string, n int64) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: load@example.com\r\nTo: sink@example.net\r\nSubject: crash test %s\r\n", id)
	fmt.Fprintf(&b, "Date: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <%s@load.test>\r\nX-Test-ID: %s\r\n\r\n", id, id)
	size := 4000
	if n%10 == 0 {
		size = 300 << 10 // larger than the inline limit: a body file
	}
	rnd := make([]byte, 32)
	for b.Len() < size {
		rand.Read(rnd)
		b.WriteString(hex.EncodeToString(rnd) + "\r\n")
	}
	return b.Bytes()
}

// client runs sessions until stop is closed, reconnecting after errors.
func (l *crashLoad) client(round, worker int, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := smtp.Dial(l.addr)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c.CommandTimeout = 30 * time.Second
		c.SubmissionTimeout = 30 * time.Second
		for {
			select {
			case <-stop:
				c.Close()
				return
			default:
			}
			n := l.seq.Add(1)
			id := fmt.Sprintf("r%d-w%d-%d", round, worker, n)
			msg := l.message(id, n)
			l.mu.Lock()
			l.sent[id] = msg
			l.mu.Unlock()
			qid, err := sendOne(c, msg)
			if err != nil {
				break
			}
			l.mu.Lock()
			l.ack[id] = qid
			l.mu.Unlock()
		}
		c.Close()
	}
}

func sendOne(c *smtp.Client, msg []byte) (string, error) {
	if err := c.Mail("load@example.com", nil); err != nil {
		return "", err
	}
	if err := c.Rcpt("sink@example.net", nil); err != nil {
		return "", err
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_, qid, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return "", fmt.Errorf("reply %q", resp.StatusText)
	}
	return qid, nil
}

// TestAcknowledgedMessagesSurviveSIGKILL kills the relay process with
// SIGKILL in the middle of a multi-session stream, several times, and
// checks that every message that got a 250 is in the queue afterwards,
// byte for byte, and that nothing else is there half.
func TestAcknowledgedMessagesSurviveSIGKILL(t *testing.T) {
	const (
		rounds  = 5
		workers = 24
	)
	p := newRelayFiles(t)
	load := &crashLoad{addr: p.smtpAddr, sent: map[string][]byte{}, ack: map[string]string{}}
	var recoveries []string
	for round := 0; round < rounds; round++ {
		p.start()
		recoveries = append(recoveries, recoveryLine(p.log.String()))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				load.client(round, w, stop)
			}()
		}
		// Let acknowledgements flow, then kill mid-stream.
		before := load.acked()
		deadline := time.Now().Add(60 * time.Second)
		for load.acked() < before+150 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if load.acked() < before+150 {
			t.Fatalf("round %d: only %d acknowledgements in 60s\n%s", round, load.acked()-before, p.log.String())
		}
		time.Sleep(time.Duration(50+round*37) * time.Millisecond)
		p.signal(syscall.SIGKILL)
		p.wait()
		close(stop)
		wg.Wait()
		t.Logf("round %d: killed with %d acknowledged so far", round, load.acked())
	}

	// A last clean start recovers; a clean stop closes the queue.
	p.start()
	recoveries = append(recoveries, recoveryLine(p.log.String()))
	p.signal(syscall.SIGTERM)
	if err := p.wait(); err != nil {
		t.Fatalf("relay exit after SIGTERM: %v\n%s", err, p.log.String())
	}
	if !strings.Contains(p.log.String(), "stopped cleanly") {
		t.Fatalf("no clean stop:\n%s", p.log.String())
	}

	q, err := queue.Open(p.queueDir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	present := map[string]bool{}
	var corrupt, unknown, unackedWhole int
	for _, m := range q.Messages() {
		r, err := q.Open(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		id := testID(data)
		load.mu.Lock()
		sent, ok := load.sent[id]
		qid, acked := load.ack[id]
		load.mu.Unlock()
		switch {
		case !ok:
			unknown++
			t.Errorf("queue holds a message the test never sent (%s)", m.ID)
		case !bytes.HasSuffix(data, sent) || !bytes.HasPrefix(data, []byte("DKIM-Signature: ")):
			corrupt++
			t.Errorf("message %s (%s) is not intact: %d bytes stored, %d sent", id, m.ID, len(data), len(sent))
		case present[id]:
			t.Errorf("message %s is queued twice", id)
		default:
			present[id] = true
			if !acked {
				unackedWhole++
			} else if qid != m.ID {
				t.Errorf("message %s was acknowledged as %s but queued as %s", id, qid, m.ID)
			}
		}
	}
	load.mu.Lock()
	var lost []string
	for id := range load.ack {
		if !present[id] {
			lost = append(lost, id)
		}
	}
	attempted, acked := len(load.sent), len(load.ack)
	load.mu.Unlock()
	t.Logf("crash test: %d kills, %d messages attempted, %d acknowledged with 250, %d in the queue after restart "+
		"(%d acknowledged, %d whole but never acknowledged: the kill came between fsync and reply), "+
		"%d acknowledged but missing, %d corrupt or half-present",
		rounds, attempted, acked, len(present), len(present)-unackedWhole, unackedWhole, len(lost), corrupt+unknown)
	for i, r := range recoveries {
		t.Logf("start %d recovery: %s", i, r)
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged messages lost, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
}

// recoveryLine returns what the queue reported on opening.
func recoveryLine(log string) string {
	var parts []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "discarded incomplete writes") || strings.Contains(line, "queue: opened") {
			if i := strings.Index(line, "msg="); i >= 0 {
				line = line[i:]
			}
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, "; ")
}

func (l *crashLoad) acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ack)
}

func testID(msg []byte) string {
	i := bytes.Index(msg, []byte("\r\nX-Test-ID: "))
	if i < 0 {
		return ""
	}
	rest := msg[i+len("\r\nX-Test-ID: "):]
	return string(rest[:bytes.IndexByte(rest, '\r')])
}

func TestSecondRelayOnTheSameQueueRefusesToStart(t *testing.T) {
	p := newRelayFiles(t)
	p.start()
	second := exec.Command(relayBinary(t), "--config", p.cfgPath, "--log-format", "text")
	out, err := second.CombinedOutput()
	if err == nil {
		t.Fatalf("a second relay started on the same queue:\n%s", out)
	}
	want := fmt.Sprintf("is locked by pid %d", p.cmd.Process.Pid)
	if !strings.Contains(string(out), want) {
		t.Fatalf("the refusal does not say who holds the queue (%q):\n%s", want, out)
	}
	p.signal(syscall.SIGTERM)
	if err := p.wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

func TestSIGTERMFinishesTheTransactionInProgress(t *testing.T) {
	p := newRelayFiles(t)
	p.start()
	c, err := smtp.Dial(p.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("load@example.com", nil); err != nil {
		t.Fatal(err)
	}
	c.Rcpt("sink@example.net", nil)
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From: load@example.com\r\nSubject: during shutdown\r\n\r\nbody\r\n")
	w.Write(msg[:20])

	p.signal(syscall.SIGTERM)
	// Readiness goes off while the session is still open.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz never reported not ready:\n%s", p.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.Write(msg[20:])
	if _, err := w.CloseWithResponse(); err != nil {
		t.Fatalf("the message in progress at SIGTERM was refused: %v", err)
	}
	c.Quit()
	if err := p.wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, p.log.String())
	}
	q, err := queue.Open(p.queueDir, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Len() != 1 {
		t.Fatalf("%d messages after shutdown, want 1", q.Len())
	}
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "relay.test"},
		DNSNames:     []string{"relay.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
