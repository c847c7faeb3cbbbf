package main_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/dsn"
	"mailroom.io/mailroom/internal/testutil/dnstest"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// world is a little internet on loopback for the relay binary: a DNS
// server it is configured to use, and receiving SMTP servers on
// 127.77.x.y sharing one port (delivery.mxPort).
type world struct {
	t    *testing.T
	DNS  *dnstest.Server
	Port int
	lns  map[string]net.Listener
}

func newWorld(t *testing.T, ips ...string) *world {
	t.Helper()
	w := &world{t: t, DNS: dnstest.Start(t), lns: map[string]net.Listener{}}
	for i, ln := range smtpsink.ListenShared(t, ips...) {
		w.lns[ips[i]] = ln
		w.Port = ln.Addr().(*net.TCPAddr).Port
	}
	return w
}

// sink serves a receiving SMTP server on ip.
func (w *world) sink(ip string, opts smtpsink.Options) *smtpsink.Sink {
	w.t.Helper()
	if opts.Hostname == "" {
		opts.Hostname = "sink-" + ip
	}
	return smtpsink.Serve(w.t, w.lns[ip], opts)
}

// mx publishes "domain MX pref host" and "host A ip".
func (w *world) mx(domain string, pref int, host, ip string) {
	w.t.Helper()
	w.DNS.Add(w.t, fmt.Sprintf("%s. 300 IN MX %d %s.", domain, pref, host), fmt.Sprintf("%s. 300 IN A %s", host, ip))
}

// relay starts the relay binary delivering through this world with the
// given retry settings (YAML flow map); extra is more delivery settings.
func (w *world) relay(retry, extra string) *relayProc {
	w.t.Helper()
	d := fmt.Sprintf("{resolvers: [%q], mxPort: %d, retry: %s%s}", w.DNS.Addr, w.Port, retry, extra)
	p := newRelayWithDelivery(w.t, d, "")
	return p
}

// submit sends one message through the relay and returns its queue id.
// testID goes in a header so deliveries can be counted.
func submit(t *testing.T, p *relayProc, from string, to []string, testID string) string {
	t.Helper()
	qid, err := trySubmit(p, from, to, testID)
	if err != nil {
		t.Fatalf("submit %s: %v", testID, err)
	}
	return qid
}

func trySubmit(p *relayProc, from string, to []string, testID string) (string, error) {
	c, err := smtp.Dial(p.smtpAddr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return "", err
	}
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	wc, err := c.Data()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(wc, "From: <%s>\r\nTo: <%s>\r\nSubject: test %s\r\nX-Test-ID: %s\r\n\r\nHello %s.\r\n", from, to[0], testID, testID, testID)
	resp, err := wc.CloseWithResponse()
	if err != nil {
		return "", err
	}
	_, qid, ok := strings.Cut(resp.StatusText, "queued as ")
	if !ok {
		return "", fmt.Errorf("reply %q", resp.StatusText)
	}
	c.Quit()
	return qid, nil
}

var testIDHeader = regexp.MustCompile(`(?m)^X-Test-ID: (\S+)\r$`)

// delivered counts the messages the sinks accepted, by test id.
func delivered(sinks ...*smtpsink.Sink) map[string]int {
	out := map[string]int{}
	for _, s := range sinks {
		for _, m := range s.Accepted() {
			if mm := testIDHeader.FindSubmatch(m.Data); mm != nil {
				out[string(mm[1])]++
			}
		}
	}
	return out
}

func poll(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// adminJSON calls the relay's admin API.
func adminJSON(t *testing.T, p *relayProc, method, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.adminAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

type adminMessage struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Attempts   int    `json:"attempts"`
	Recipients []struct {
		Address      string `json:"addr"`
		State        string `json:"state"`
		LastResponse string `json:"resp"`
	} `json:"rcpts"`
	History []struct {
		Recipient                            string `json:"rcpt"`
		Status, Reason, Host, IP, TLS, Reply string
	} `json:"history"`
}

// metric reads one sample from the relay's /metrics ("name{labels}").
func metric(t *testing.T, p *relayProc, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// dsnFor returns the parsed DSNs a sink received.
func dsnsIn(t *testing.T, s *smtpsink.Sink) []*dsn.Parsed {
	t.Helper()
	var out []*dsn.Parsed
	for _, m := range s.Accepted() {
		if m.From != "" {
			t.Errorf("a message to the sender's sink came from <%s>, want a DSN from <>", m.From)
			continue
		}
		p, err := dsn.Parse(m.Data)
		if err != nil {
			t.Fatalf("DSN does not parse: %v\n%s", err, m.Data)
		}
		out = append(out, p)
	}
	return out
}

const fastRetry = "{schedule: [1s], maxAge: 1h, delayWarningAfter: 0s}"

func TestRelayDeliversByMXPreferenceFallbackImplicitMXAndBouncesNullMX(t *testing.T) {
	w := newWorld(t, "127.77.1.1", "127.77.1.2", "127.77.1.3", "127.77.1.4")
	// mx1 (preferred) refuses connections: nothing listens there.
	w.lns["127.77.1.1"].Close()
	w.mx("example.net", 10, "mx1.example.net", "127.77.1.1")
	w.mx("example.net", 20, "mx2.example.net", "127.77.1.2")
	mx2 := w.sink("127.77.1.2", smtpsink.Options{})
	w.DNS.Add(t, "implicit.test. 300 IN A 127.77.1.3") // no MX: the domain itself
	implicit := w.sink("127.77.1.3", smtpsink.Options{})
	w.DNS.Add(t, "nullmx.test. 300 IN MX 0 .")
	w.mx("example.com", 10, "mx.example.com", "127.77.1.4")
	sender := w.sink("127.77.1.4", smtpsink.Options{})

	p := w.relay(fastRetry, "")
	p.start()
	submit(t, p, "app@example.com", []string{"alice@example.net"}, "pref")
	submit(t, p, "app@example.com", []string{"bob@implicit.test"}, "implicit")
	nullID := submit(t, p, "app@example.com", []string{"carol@nullmx.test"}, "nullmx")

	poll(t, "deliveries and the null MX bounce", 60*time.Second, func() bool {
		return delivered(mx2)["pref"] == 1 && delivered(implicit)["implicit"] == 1 && len(sender.Accepted()) == 1
	})
	ds := dsnsIn(t, sender)
	r, ok := ds[0].Recipient("carol@nullmx.test")
	if !ok || r.Get("Action") != "failed" || !strings.HasPrefix(r.Get("Status"), "5.") {
		t.Errorf("null MX DSN recipient fields: %v", r)
	}
	if !strings.Contains(ds[0].OriginalHeader, "X-Test-ID: nullmx") {
		t.Errorf("DSN does not return the original header:\n%s", ds[0].OriginalHeader)
	}
	poll(t, "the queue to empty", 30*time.Second, func() bool {
		var list []adminMessage
		adminJSON(t, p, "GET", "/v1/messages", &list)
		return len(list) == 0
	})
	if code := adminJSON(t, p, "GET", "/v1/messages/"+nullID, nil); code != 404 {
		t.Errorf("finished message still in the queue: %d", code)
	}
	if got := metric(t, p, `mailroom_queue_recipients_finished_total{reason="null_mx",status="bounced"}`); got != 1 {
		t.Errorf("bounced null_mx metric = %v", got)
	}
}

func TestRelayMixedOutcomeSendsOneDSNListingOnlyTheFailures(t *testing.T) {
	w := newWorld(t, "127.77.2.1", "127.77.2.2", "127.77.2.3", "127.77.2.4")
	w.mx("ok.test", 10, "mx.ok.test", "127.77.2.1")
	w.mx("later.test", 10, "mx.later.test", "127.77.2.2")
	w.mx("bad.test", 10, "mx.bad.test", "127.77.2.3")
	w.mx("example.com", 10, "mx.example.com", "127.77.2.4")
	okSink := w.sink("127.77.2.1", smtpsink.Options{})
	later := w.sink("127.77.2.2", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(451, "4.3.0", "try again later")}}}})
	w.sink("127.77.2.3", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(550, "5.1.1", "no such user here")}}}})
	sender := w.sink("127.77.2.4", smtpsink.Options{})

	p := w.relay("{schedule: [1h], maxAge: 2h, delayWarningAfter: 0s}", "")
	p.start()
	id := submit(t, p, "app@example.com", []string{"a@ok.test", "b@later.test", "c@bad.test"}, "mixed")
	var m adminMessage
	poll(t, "first attempt recorded", 60*time.Second, func() bool {
		adminJSON(t, p, "GET", "/v1/messages/"+id, &m)
		return m.Attempts == 1 && len(sender.Accepted()) == 1
	})
	states := map[string]string{}
	for _, r := range m.Recipients {
		states[r.Address] = r.State
	}
	if states["a@ok.test"] != "delivered" || states["b@later.test"] != "" || states["c@bad.test"] != "failed" || m.State != "deferred" {
		t.Errorf("recipient states %v, message state %q", states, m.State)
	}
	if delivered(okSink)["mixed"] != 1 || len(later.Accepted()) != 0 {
		t.Errorf("ok sink %v, later sink %d", delivered(okSink), len(later.Accepted()))
	}
	ds := dsnsIn(t, sender)
	if len(ds[0].Recipients) != 1 {
		t.Fatalf("DSN lists %d recipients, want only the failed one", len(ds[0].Recipients))
	}
	r, _ := ds[0].Recipient("c@bad.test")
	if r.Get("Action") != "failed" || r.Get("Status") != "5.1.1" || !strings.Contains(r.Get("Diagnostic-Code"), "550 5.1.1 no such user here") ||
		!strings.Contains(r.Get("Remote-MTA"), "mx.bad.test") {
		t.Errorf("failed recipient fields: %v", r)
	}
	// The history shows every attempt with the remote host, IP and reply.
	var sawLater bool
	for _, h := range m.History {
		if h.Recipient == "b@later.test" && h.Status == "deferred" && h.Host == "mx.later.test" && h.IP == "127.77.2.2" && strings.Contains(h.Reply, "451 4.3.0 try again later") {
			sawLater = true
		}
	}
	if !sawLater {
		t.Errorf("history lacks the deferral: %+v", m.History)
	}
	// The CLI shows the same through the admin API.
	out, err := exec.Command(relayBinary(t), "queue", "-admin", p.adminAddr, "show", id).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "451 4.3.0 try again later") || !strings.Contains(string(out), "mx.later.test") {
		t.Errorf("relay queue show: %v\n%s", err, out)
	}
	out, err = exec.Command(relayBinary(t), "queue", "-admin", p.adminAddr, "-json", "list", "-state", "deferred", "-domain", "later.test").CombinedOutput()
	var listed []adminMessage
	if err != nil || json.Unmarshal(out, &listed) != nil || len(listed) != 1 || listed[0].ID != id {
		t.Errorf("relay queue -json list: %v\n%s", err, out)
	}
	// The unknown user is now suppressed: the next message bounces at once.
	var sup []struct{ Address string }
	adminJSON(t, p, "GET", "/v1/suppressions", &sup)
	if len(sup) != 1 || sup[0].Address != "c@bad.test" {
		t.Fatalf("suppressions %+v", sup)
	}
	submit(t, p, "app@example.com", []string{"c@bad.test"}, "suppressed")
	poll(t, "the suppression bounce", 60*time.Second, func() bool { return len(sender.Accepted()) == 2 })
	r, _ = dsnsIn(t, sender)[1].Recipient("c@bad.test")
	if !strings.Contains(r.Get("Diagnostic-Code")+dsnsIn(t, sender)[1].Text, "suppressed") {
		t.Errorf("suppression DSN does not say why: %v", r)
	}
	if got := metric(t, p, "mailroom_delivery_suppressed_total"); got != 1 {
		t.Errorf("suppressed metric = %v", got)
	}
	if code := adminJSON(t, p, "DELETE", "/v1/suppressions/c@bad.test", nil); code != 200 {
		t.Errorf("unsuppress: %d", code)
	}
}

func TestRelayRetriesOnScheduleThenDeliversAndExpiresWithADSN(t *testing.T) {
	w := newWorld(t, "127.77.3.1", "127.77.3.2", "127.77.3.3")
	w.mx("flaky.test", 10, "mx.flaky.test", "127.77.3.1")
	w.mx("dead.test", 10, "mx.dead.test", "127.77.3.2")
	w.mx("example.com", 10, "mx.example.com", "127.77.3.3")
	// Three temporary refusals, then the server recovers.
	flaky := w.sink("127.77.3.1", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(451, "4.4.5", "busy"), Times: 3}}}})
	w.sink("127.77.3.2", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(452, "4.2.2", "mailbox full")}}}})
	sender := w.sink("127.77.3.3", smtpsink.Options{})

	p := w.relay("{schedule: [500ms, 1s], maxAge: 6s, delayWarningAfter: 2s}", "")
	p.start()
	flakyID := submit(t, p, "app@example.com", []string{"x@flaky.test"}, "flaky")
	submit(t, p, "app@example.com", []string{"y@dead.test"}, "dead")

	poll(t, "delivery after recovery", 60*time.Second, func() bool { return delivered(flaky)["flaky"] == 1 })
	// Four attempts: three refused, the fourth delivered.
	rcpts := 0
	for _, c := range flaky.Conns() {
		for _, l := range c.Transcript {
			if strings.HasPrefix(strings.ToUpper(l), "RCPT TO") {
				rcpts++
			}
		}
	}
	if rcpts != 4 {
		t.Errorf("flaky sink saw %d RCPT commands, want 4", rcpts)
	}
	poll(t, "delay and failure DSNs", 60*time.Second, func() bool { return len(sender.Accepted()) == 2 })
	ds := dsnsIn(t, sender)
	delay, fail := ds[0], ds[1]
	if r, _ := delay.Recipient("y@dead.test"); r.Get("Action") != "delayed" || r.Get("Will-Retry-Until") == "" || r.Get("Status") != "4.2.2" {
		t.Errorf("delay DSN fields: %v", r)
	}
	r, _ := fail.Recipient("y@dead.test")
	if r.Get("Action") != "failed" || r.Get("Status") != "5.4.7" || r.Get("Final-Recipient") != "rfc822; y@dead.test" || r.Get("Last-Attempt-Date") == "" {
		t.Errorf("failure DSN fields: %v", r)
	}
	if !strings.Contains(r.Get("Diagnostic-Code")+fail.Text, "452 4.2.2 mailbox full") {
		t.Errorf("failure DSN lacks the last reply: %v\n%s", r, fail.Text)
	}
	if fail.PerMessage.Get("Reporting-MTA") != "dns; relay.test" || fail.PerMessage.Get("Arrival-Date") == "" {
		t.Errorf("per-message fields: %v", fail.PerMessage)
	}
	if fail.Header.Get("From") == "" || !strings.Contains(fail.Header.Get("Content-Type"), "report-type=delivery-status") {
		t.Errorf("DSN header: %v", fail.Header)
	}
	if code := adminJSON(t, p, "GET", "/v1/messages/"+flakyID, nil); code != 404 {
		t.Errorf("delivered message still queued (%d)", code)
	}
	if got := metric(t, p, `mailroom_queue_recipients_finished_total{reason="expired",status="bounced"}`); got != 1 {
		t.Errorf("expired metric = %v", got)
	}
}

func TestRelayNeverBouncesABounce(t *testing.T) {
	w := newWorld(t, "127.77.4.1")
	w.mx("bad.test", 10, "mx.bad.test", "127.77.4.1")
	w.sink("127.77.4.1", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(550, "5.7.1", "refused")}}}})
	// The sender's own domain has a null MX: its DSN fails too.
	w.DNS.Add(t, "example.com. 300 IN MX 0 .")

	p := w.relay(fastRetry, "")
	p.start()
	submit(t, p, "app@example.com", []string{"z@bad.test"}, "loop")
	poll(t, "the bounce to be dropped", 60*time.Second, func() bool {
		return metric(t, p, "mailroom_dsn_dropped_total") == 1
	})
	var list []adminMessage
	poll(t, "the queue to empty", 30*time.Second, func() bool {
		adminJSON(t, p, "GET", "/v1/messages", &list)
		return len(list) == 0
	})
	if got := metric(t, p, `mailroom_dsn_queued_total{action="failed"}`); got != 1 {
		t.Errorf("DSNs queued = %v, want exactly the one for the original message", got)
	}
}

// testCA is a certificate authority whose PEM the relay binary trusts
// through SSL_CERT_FILE.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) serverTLS(t *testing.T, names ...string) *tls.Config {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func (ca *testCA) trustIn(t *testing.T, p *relayProc) {
	f := filepath.Join(p.dir, "ca.pem")
	if err := os.WriteFile(f, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	p.env = append(p.env, "SSL_CERT_FILE="+f)
}

func TestRelaySmarthostWithSTARTTLSAndAUTH(t *testing.T) {
	ca := newTestCA(t)
	w := newWorld(t, "127.77.5.1")
	w.DNS.Add(t, "smarthost.test. 300 IN A 127.77.5.1")
	up := w.sink("127.77.5.1", smtpsink.Options{TLS: ca.serverTLS(t, "smarthost.test"),
		Users: map[string]string{"relayuser": "s3cret"}})

	d := fmt.Sprintf("{mode: Smarthost, resolvers: [%q], retry: %s, smarthost: {host: smarthost.test, port: %d, tls: Required, credentialsFile: CREDS}}",
		w.DNS.Addr, fastRetry, w.Port)
	p := newRelayWithDelivery(t, d, "")
	creds := filepath.Join(p.dir, "smarthost.yaml")
	os.WriteFile(creds, []byte("username: relayuser\npassword: s3cret\n"), 0o600)
	cfg, _ := os.ReadFile(p.cfgPath)
	os.WriteFile(p.cfgPath, bytes.ReplaceAll(cfg, []byte("CREDS"), []byte(creds)), 0o600)
	ca.trustIn(t, p)
	p.start()

	submit(t, p, "app@example.com", []string{"anyone@far.away.test", "other@elsewhere.test"}, "smart")
	poll(t, "delivery to the smarthost", 60*time.Second, func() bool { return delivered(up)["smart"] == 1 })
	m := up.Accepted()[0]
	if !m.TLS || m.AuthUser != "relayuser" || m.ServerName != "smarthost.test" || len(m.Rcpts) != 2 {
		t.Errorf("smarthost saw TLS=%v user=%q SNI=%q rcpts=%v", m.TLS, m.AuthUser, m.ServerName, m.Rcpts)
	}
}

func TestRelayDefersAnMTASTSEnforceDomainWithoutValidTLS(t *testing.T) {
	ca := newTestCA(t)
	w := newWorld(t, "127.77.6.1")
	w.mx("secure.test", 10, "mx.secure.test", "127.77.6.1")
	// The MX speaks no TLS at all.
	mx := w.sink("127.77.6.1", smtpsink.Options{})
	// The policy host: HTTPS on port 443 of its own loopback address.
	ln, err := net.Listen("tcp", "127.77.6.2:443")
	if err != nil {
		t.Fatalf("the MTA-STS policy server needs port 443 (root): %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(rw, r)
			return
		}
		rw.Header().Set("Content-Type", "text/plain")
		io.WriteString(rw, "version: STSv1\nmode: enforce\nmx: mx.secure.test\nmax_age: 86400\n")
	}), TLSConfig: ca.serverTLS(t, "mta-sts.secure.test")}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	w.DNS.Add(t, `_mta-sts.secure.test. 300 IN TXT "v=STSv1; id=1;"`, "mta-sts.secure.test. 300 IN A 127.77.6.2")

	p := w.relay("{schedule: [1h], maxAge: 2h, delayWarningAfter: 0s}", "")
	ca.trustIn(t, p)
	p.start()
	id := submit(t, p, "app@example.com", []string{"user@secure.test"}, "sts")
	var m adminMessage
	poll(t, "the attempt", 60*time.Second, func() bool {
		adminJSON(t, p, "GET", "/v1/messages/"+id, &m)
		return m.Attempts == 1
	})
	if m.State != "deferred" || len(m.History) != 1 || m.History[0].Status != "deferred" {
		t.Fatalf("message %+v", m)
	}
	if h := m.History[0]; h.Reason != "tls" && h.Reason != "mta_sts" {
		t.Errorf("deferred for %q (%s), want the TLS policy", h.Reason, h.Reply)
	}
	if len(mx.Accepted()) != 0 {
		t.Errorf("delivered in cleartext despite the enforce policy")
	}
}

// TestRelayKilledWithMessagesInEveryStateDeliversEverythingAfterRestart
// kills the relay binary with SIGKILL while messages are delivered,
// deferred, held, bounced, in the middle of a transaction and still
// arriving, restarts it, and checks that every acknowledged message
// reaches every one of its destinations. Duplicates are allowed
// (at-least-once) and reported; a loss fails the test.
func TestRelayKilledWithMessagesInEveryStateDeliversEverythingAfterRestart(t *testing.T) {
	w := newWorld(t, "127.77.7.1", "127.77.7.2", "127.77.7.3", "127.77.7.4", "127.77.7.5")
	w.mx("ok.test", 10, "mx.ok.test", "127.77.7.1")
	w.mx("slow.test", 10, "mx.slow.test", "127.77.7.2")
	w.mx("later.test", 10, "mx.later.test", "127.77.7.3")
	w.mx("bad.test", 10, "mx.bad.test", "127.77.7.4")
	w.mx("example.com", 10, "mx.example.com", "127.77.7.5")
	gate := make(chan struct{})
	okSink := w.sink("127.77.7.1", smtpsink.Options{})
	slow := w.sink("127.77.7.2", smtpsink.Options{Script: smtpsink.Script{Data: smtpsink.Action{Wait: gate}}})
	later := w.sink("127.77.7.3", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(451, "4.3.0", "not now")}}}})
	w.sink("127.77.7.4", smtpsink.Options{Script: smtpsink.Script{
		Rcpt: map[string]smtpsink.Action{"*": {Reply: smtpsink.Reply(550, "5.7.1", "refused")}}}})
	sender := w.sink("127.77.7.5", smtpsink.Options{})

	p := w.relay("{schedule: [2s], maxAge: 1h, delayWarningAfter: 0s}", "")
	p.start()

	// want: test id -> sinks it must reach.
	want := map[string][]*smtpsink.Sink{}
	var latIDs []string
	send := func(id string, to []string, sinks ...*smtpsink.Sink) string {
		qid := submit(t, p, "app@example.com", to, id)
		want[id] = sinks
		return qid
	}
	for i := range 20 {
		send(fmt.Sprintf("ok-%d", i), []string{"u@ok.test"}, okSink)
	}
	for i := range 6 {
		send(fmt.Sprintf("slow-%d", i), []string{"u@slow.test"}, slow)
	}
	for i := range 8 {
		latIDs = append(latIDs, send(fmt.Sprintf("later-%d", i), []string{"u@later.test"}, later))
	}
	for i := range 4 {
		send(fmt.Sprintf("mixed-%d", i), []string{"u@ok.test", "u@later.test", "u@bad.test"}, okSink, later)
	}
	for i := range 3 {
		send(fmt.Sprintf("bad-%d", i), []string{"u@bad.test"})
	}

	poll(t, "every state to be reached", 90*time.Second, func() bool {
		var deferred []adminMessage
		adminJSON(t, p, "GET", "/v1/messages?state=deferred", &deferred)
		return slow.Waiting("data") >= 1 && len(deferred) >= 8 && len(sender.Accepted()) >= 7
	})
	for _, id := range latIDs[:3] {
		if code := adminJSON(t, p, "POST", "/v1/messages/"+id+"/hold", nil); code != 200 {
			t.Fatalf("hold: %d", code)
		}
	}
	var held []adminMessage
	adminJSON(t, p, "GET", "/v1/messages?state=held", &held)
	if len(held) != 3 {
		t.Fatalf("%d held messages, want 3", len(held))
	}

	// More mail arrives while the relay is killed.
	acks := make(chan string, 1000)
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("late-%d", i)
			if _, err := trySubmit(p, "app@example.com", []string{"u@ok.test"}, id); err == nil {
				acks <- id
			} else {
				return
			}
		}
	}()
	poll(t, "late submissions", 30*time.Second, func() bool { return len(acks) >= 5 })
	p.signal(syscall.SIGKILL)
	p.wait()
	close(stop)
	<-loadDone
	close(acks)
	lateAcked := 0
	for id := range acks {
		want[id] = []*smtpsink.Sink{okSink}
		lateAcked++
	}
	// The submission cut off by the kill may have been committed without
	// its 250 reaching the client; delivering it is allowed (the client
	// retries, at-least-once), delivering anything never submitted is not.
	cutOff := fmt.Sprintf("late-%d", lateAcked)

	// The receiving servers recover; the relay restarts on the same queue.
	close(gate)
	later.SetScript(smtpsink.Script{})
	p.start()
	for _, id := range latIDs[:3] {
		var m adminMessage
		if code := adminJSON(t, p, "GET", "/v1/messages/"+id, &m); code != 200 || m.State != "held" {
			t.Fatalf("held message after restart: %d %+v", code, m)
		}
		adminJSON(t, p, "POST", "/v1/messages/"+id+"/release", nil)
	}

	missing := func() []string {
		var out []string
		got := map[*smtpsink.Sink]map[string]int{}
		for _, s := range []*smtpsink.Sink{okSink, slow, later} {
			got[s] = delivered(s)
		}
		for id, sinks := range want {
			for _, s := range sinks {
				if got[s][id] == 0 {
					out = append(out, id)
				}
			}
		}
		return out
	}
	poll(t, "every acknowledged message to be delivered", 120*time.Second, func() bool { return len(missing()) == 0 })
	poll(t, "the queue to empty", 60*time.Second, func() bool {
		var list []adminMessage
		adminJSON(t, p, "GET", "/v1/messages", &list)
		return len(list) == 0
	})

	deliveries, dups, unacked := 0, 0, 0
	for _, s := range []*smtpsink.Sink{okSink, slow, later} {
		for id, n := range delivered(s) {
			if _, ok := want[id]; !ok {
				if id != cutOff {
					t.Errorf("%s delivered but never submitted", id)
				}
				unacked++
			}
			deliveries += n
			dups += n - 1
		}
	}
	expected := 0
	for _, sinks := range want {
		expected += len(sinks)
	}
	bounces := 0
	for _, d := range dsnsIn(t, sender) {
		bounces += len(d.Recipients)
	}
	t.Logf("acknowledged %d messages (%d destination deliveries expected); delivered %d (duplicates %d, lost %d, committed but cut off before its 250: %d); bounce DSN recipients %d (7 expected)",
		len(want), expected, deliveries, dups, len(missing()), unacked, bounces)
	if bounces < 7 {
		t.Errorf("bounce DSNs for %d recipients, want 7", bounces)
	}
}
