// Package benchkit holds what the relay benchmarks share: starting the
// relay binary with a benchmark configuration, a throwaway Postfix
// instance in a temp dir, Postfix's smtp-source as load generator, and
// small helpers. Everything listens on loopback; the Postfix parts need
// root (Postfix's master starts as root).
package benchkit

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"golang.org/x/crypto/bcrypt"

	"mailroom.io/mailroom/internal/dkim"
)

// Must stops the benchmark on an error: a benchmark that hit one measures
// nothing worth printing.
func Must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// WorkDir returns dir, or when it is empty a new directory under /var/tmp
// named after prefix, and what removes the new one (nothing for dir).
func WorkDir(dir, prefix string) (string, func()) {
	if dir != "" {
		return dir, func() {}
	}
	d, err := os.MkdirTemp("/var/tmp", prefix)
	Must(err)
	return d, func() { os.RemoveAll(d) }
}

// FreeAddr returns a free TCP address on 127.0.0.1.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Must(err)
	defer l.Close()
	return l.Addr().String()
}

// MS formats a duration in milliseconds.
func MS(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// SmtpSource runs Postfix's smtp-source: n messages of size bytes from
// sender to rcpt over sessions concurrent sessions to addr. It returns how
// long smtp-source ran and stops the benchmark if it reported any refusal.
func SmtpSource(bin, addr string, n, sessions, size int, sender, rcpt, name string) time.Duration {
	cmd := exec.Command(bin, "-d", "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(n),
		"-l", strconv.Itoa(size), "-f", sender, "-t", rcpt, addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		log.Fatalf("%s: smtp-source: %v\n%s", name, err, out.String())
	}
	if out.Len() > 0 {
		// smtp-source only prints on trouble (a refused message).
		log.Fatalf("%s: smtp-source reported:\n%s", name, out.String())
	}
	return time.Since(start)
}

// BenchMessage is a plain message of about n bytes from load@example.com
// to rcpt.
func BenchMessage(n int, rcpt, msgID string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Load <load@example.com>\r\nTo: <%s>\r\nSubject: benchmark\r\n"+
		"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n", rcpt, msgID)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d%s\r\n", i, strings.Repeat("X", 77))
	}
	return b.Bytes()
}

// Relay is the relay binary running with a benchmark config: a trusted
// network 127.0.0.1/32 for example.com senders, the given DKIM algorithm
// for example.com, a STARTTLS+AUTH credential, and the given delivery
// section.
type Relay struct {
	Dir, CfgPath, SMTPAddr, TLSAddr, HTTPAddr, AdminAddr string
	Pool                                                 *x509.CertPool
	Bin                                                  string
	cmd                                                  *exec.Cmd
}

// CPU returns the relay process's CPU time so far (user + system), from
// /proc; 0 when it cannot be read.
func (r *Relay) CPU() time.Duration {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name: utime and stime are
	// the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// SelfCPU returns this process's CPU time so far (user + system).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Credentials of the benchmark's SMTP login.
const (
	User     = "bench.user"
	Password = "bench-password"
)

// NewRelay writes a relay config in dir. delivery is the YAML flow mapping
// of the delivery section, e.g. "{paused: true}".
func NewRelay(bin, dir, alg, delivery string) *Relay {
	Must(os.MkdirAll(dir, 0o700))
	key, err := dkim.Generate(dkim.Algorithm(alg), rand.Reader)
	Must(err)
	pemKey, err := dkim.MarshalPrivateKey(key)
	Must(err)
	Must(os.WriteFile(filepath.Join(dir, "dkim.pem"), pemKey, 0o600))
	certPEM, keyPEM := SelfSigned("relay.bench.test")
	Must(os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600))
	Must(os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600))
	hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.DefaultCost)
	Must(err)
	r := &Relay{Bin: bin, Dir: dir, SMTPAddr: FreeAddr(), TLSAddr: FreeAddr(), HTTPAddr: FreeAddr(), AdminAddr: FreeAddr(), Pool: x509.NewCertPool()}
	r.Pool.AppendCertsFromPEM(certPEM)
	cfg := fmt.Sprintf(`hostname: relay.bench.test
listeners: {submission: %q, submissions: %q, http: %q, admin: %q}
tls: {certFile: %[5]s/tls.crt, keyFile: %[5]s/tls.key}
limits: {maxConnectionsPerIP: 1000}
trustedNetworks:
  - {name: bench, cidrs: [127.0.0.1/32], allowedSenders: [example.com]}
domains:
  - {name: example.com, keys: [{selector: bench, algorithm: %[6]s, privateKeyFile: %[5]s/dkim.pem}]}
credentials:
  - {username: %[7]s, passwordHash: %[8]q, allowedSenders: [example.com]}
queue: {directory: %[5]s/queue}
delivery: %[9]s
`, r.SMTPAddr, r.TLSAddr, r.HTTPAddr, r.AdminAddr, dir, alg, User, string(hash), delivery)
	r.CfgPath = filepath.Join(dir, "relay.yaml")
	Must(os.WriteFile(r.CfgPath, []byte(cfg), 0o600))
	return r
}

// TLSConfig is what a client needs to verify the relay's certificate.
func (r *Relay) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: r.Pool, ServerName: "relay.bench.test"}
}

// Start runs the relay and waits until it is ready.
func (r *Relay) Start() {
	r.cmd = exec.Command(r.Bin, "--config", r.CfgPath, "--log-format", "text")
	// Per-message log lines go to a file, as in a pod they go to a pipe.
	f, err := os.Create(filepath.Join(r.Dir, "relay.log"))
	Must(err)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	Must(r.cmd.Start())
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get("http://" + r.HTTPAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			log.Fatalf("relay not ready; see %s/relay.log", r.Dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the running relay's process id.
func (r *Relay) PID() int { return r.cmd.Process.Pid }

// Metric reads one unlabelled (or fully labelled, name including the
// labels) sample from /metrics; 0 when absent.
func (r *Relay) Metric(name string) float64 {
	resp, err := http.Get("http://" + r.HTTPAddr + "/metrics")
	Must(err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// Stop sends SIGTERM and waits for a clean exit.
func (r *Relay) Stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			log.Fatalf("relay exit: %v; see %s/relay.log", err, r.Dir)
		}
	case <-time.After(60 * time.Second):
		r.cmd.Process.Kill()
		log.Fatal("relay did not stop")
	}
}

// Postfix is a throwaway Postfix instance: its own config, queue and log
// in a temp dir, smtpd on a loopback port.
type Postfix struct {
	Dir, Addr string
	Bin       string
	// ResolvConf, when set, is bind-mounted over /etc/resolv.conf in a
	// private mount namespace that only this instance's processes see, so
	// its SMTP client asks the benchmark's DNS server. The host's file is
	// never touched.
	ResolvConf string
}

// NewPostfix writes a Postfix configuration in dir; extraMain is appended
// to main.cf (later settings override earlier ones).
func NewPostfix(bin, dir, extraMain string) *Postfix {
	p := &Postfix{Bin: bin, Dir: dir, Addr: FreeAddr()}
	for _, d := range []string{"etc", "spool", "data"} {
		Must(os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	Must(os.Chmod(dir, 0o755))
	// The master's lock and data files belong to the mail owner.
	out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput()
	if err != nil {
		log.Fatalf("chown postfix (the benchmark must run as root): %v %s", err, out)
	}
	mainCf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
maillog_file = %[1]s/maillog
biff = no
`, dir) + extraMain
	// Debian's services without chroot: the temp queue has no chroot
	// files, and unchrooted processes read /etc/resolv.conf as seen in
	// their mount namespace. smtpd on the benchmark port.
	masterCf := p.Addr + ` inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
	Must(os.WriteFile(filepath.Join(dir, "etc", "main.cf"), []byte(mainCf), 0o644))
	Must(os.WriteFile(filepath.Join(dir, "etc", "master.cf"), []byte(masterCf), 0o644))
	return p
}

// Start starts the instance and waits until smtpd listens.
func (p *Postfix) Start() {
	conf := filepath.Join(p.Dir, "etc")
	cmd := exec.Command(p.Bin, "-c", conf, "start")
	if p.ResolvConf != "" {
		// The master daemonizes inside the namespace and keeps it alive;
		// every Postfix process it starts inherits the bind mount.
		cmd = exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
			`mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3" start`, "sh", p.ResolvConf, p.Bin, conf)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		log.Fatalf("postfix start: %v\n%s", err, out)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("postfix smtpd not listening on %s; see %s/maillog", p.Addr, p.Dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the instance and waits until its port is free.
func (p *Postfix) Stop() {
	out, err := exec.Command(p.Bin, "-c", filepath.Join(p.Dir, "etc"), "stop").CombinedOutput()
	if err != nil {
		log.Printf("postfix stop: %v\n%s", err, out)
	}
	// The master exits asynchronously; wait until the port is free.
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

// Queued counts the instance's queue files.
func (p *Postfix) Queued() int {
	n := 0
	for _, q := range []string{"incoming", "active", "deferred", "hold", "maildrop"} {
		filepath.Walk(filepath.Join(p.Dir, "spool", q), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}

// SelfSigned returns a P-256 certificate and key for name.
func SelfSigned(name string) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Must(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Must(err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	Must(err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// QueueIDs lists the instance's queue file names (queue IDs), in any
// queue.
func (p *Postfix) QueueIDs() map[string]bool {
	ids := map[string]bool{}
	for _, q := range []string{"incoming", "active", "deferred", "hold", "maildrop"} {
		filepath.Walk(filepath.Join(p.Dir, "spool", q), func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				ids[filepath.Base(path)] = true
			}
			return nil
		})
	}
	return ids
}

// Message returns a queued message's header and body as Postfix stored
// them (postcat -bh), with CRLF line endings.
func (p *Postfix) Message(id string) []byte {
	postcat := filepath.Join(filepath.Dir(p.Bin), "postcat")
	var out []byte
	var err error
	// The file may be moving between queues (incoming, active, deferred)
	// just as postcat looks for it: try again.
	for i := 0; i < 10; i++ {
		if out, err = exec.Command(postcat, "-c", filepath.Join(p.Dir, "etc"), "-bh", "-q", id).Output(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		log.Fatalf("postcat -q %s: %v", id, err)
	}
	return bytes.ReplaceAll(out, []byte("\n"), []byte("\r\n"))
}

// CountQueuedWith counts the queue files that contain s (e.g. a header
// name) and all queue files.
func (p *Postfix) CountQueuedWith(s string) (with, all int) {
	for _, q := range []string{"incoming", "active", "deferred", "hold", "maildrop"} {
		filepath.Walk(filepath.Join(p.Dir, "spool", q), func(path string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			all++
			if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(s)) {
				with++
			}
			return nil
		})
	}
	return with, all
}

// OpenDKIM is an opendkim milter run in the foreground with its own
// configuration in a temp dir: signing only (Mode s), relaxed/relaxed, one
// RSA key from opendkim-genkey for Domain/Selector, every loopback client
// an internal host (so mail from it is signed), listening on a loopback
// inet socket or a unix socket in the temp dir. The package's service is
// never involved.
type OpenDKIM struct {
	// Network is "tcp" (Addr is 127.0.0.1:port) or "unix" (Addr is the
	// socket's path).
	Network, Addr, Dir, Domain, Selector string
	Bin                                  string
	Key                                  *rsa.PrivateKey
	cmd                                  *exec.Cmd
	done                                 chan error
}

// NewOpenDKIM generates a bits-bit RSA key with genkey (opendkim-genkey)
// and writes an opendkim.conf in dir; socket is "inet" (127.0.0.1) or
// "unix".
func NewOpenDKIM(bin, genkey, dir, domain, selector string, bits int, socket string) *OpenDKIM {
	// Postfix's smtpd (user postfix) must reach a unix socket here.
	Must(os.MkdirAll(dir, 0o755))
	Must(os.Chmod(dir, 0o755))
	o := &OpenDKIM{Bin: bin, Dir: dir, Domain: domain, Selector: selector}
	var sock string
	switch socket {
	case "inet":
		o.Network, o.Addr = "tcp", FreeAddr()
		_, port, _ := net.SplitHostPort(o.Addr)
		sock = "inet:" + port + "@127.0.0.1"
	case "unix":
		o.Network, o.Addr = "unix", filepath.Join(dir, "opendkim.sock")
		sock = "local:" + o.Addr
	default:
		log.Fatalf("opendkim socket %q: want inet or unix", socket)
	}
	out, err := exec.Command(genkey, "-b", strconv.Itoa(bits), "-h", "sha256", "-s", selector, "-d", domain, "-D", dir).CombinedOutput()
	if err != nil {
		log.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	keyFile := filepath.Join(dir, selector+".private")
	Must(os.Chmod(keyFile, 0o600))
	pemKey, err := os.ReadFile(keyFile)
	Must(err)
	blk, _ := pem.Decode(pemKey)
	if blk == nil {
		log.Fatalf("%s: no PEM block", keyFile)
	}
	var k any
	if k, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	Must(err)
	var ok bool
	if o.Key, ok = k.(*rsa.PrivateKey); !ok || o.Key.N.BitLen() != bits {
		log.Fatalf("%s: not an RSA-%d key", keyFile, bits)
	}
	conf := fmt.Sprintf(`# Throwaway signing milter for the benchmark.
Syslog no
Mode s
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
Domain %[1]s
Selector %[2]s
KeyFile %[3]s
InternalHosts 127.0.0.0/8
Socket %[4]s
PidFile %[5]s/opendkim.pid
# A unix socket must be writable by Postfix's smtpd (user postfix).
UMask 000
# The key lives in the benchmark's temp dir below /var/tmp, which others
# may write; opendkim would refuse it (loaded once, at start).
RequireSafeKeys false
`, domain, selector, keyFile, sock, dir)
	Must(os.WriteFile(filepath.Join(dir, "opendkim.conf"), []byte(conf), 0o644))
	return o
}

// Milter is the socket for Postfix's smtpd_milters.
func (o *OpenDKIM) Milter() string {
	if o.Network == "unix" {
		return "unix:" + o.Addr
	}
	return "inet:" + o.Addr
}

// Start runs opendkim in the foreground and waits until it listens.
func (o *OpenDKIM) Start() {
	o.cmd = exec.Command(o.Bin, "-f", "-x", filepath.Join(o.Dir, "opendkim.conf"))
	f, err := os.Create(filepath.Join(o.Dir, "opendkim.log"))
	Must(err)
	o.cmd.Stdout, o.cmd.Stderr = f, f
	// Should the benchmark die (log.Fatal) before Stop, opendkim goes too.
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Must(o.cmd.Start())
	o.done = make(chan error, 1)
	go func() { o.done <- o.cmd.Wait(); f.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout(o.Network, o.Addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-o.done:
			b, _ := os.ReadFile(filepath.Join(o.Dir, "opendkim.log"))
			log.Fatalf("opendkim exited: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			o.cmd.Process.Kill()
			log.Fatalf("opendkim not listening on %s; see %s/opendkim.log", o.Addr, o.Dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for opendkim to exit (SIGKILL after 30s).
func (o *OpenDKIM) Stop() {
	if o.cmd == nil || o.cmd.Process == nil {
		return
	}
	o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.done:
	case <-time.After(30 * time.Second):
		o.cmd.Process.Kill()
		<-o.done
		log.Printf("opendkim did not stop on SIGTERM; killed")
	}
	o.cmd = nil
}

// Verify checks msg's DKIM signatures against this milter's public key
// (no DNS): it fails unless there is one by Domain/Selector that verifies,
// made with rsa-sha256 and relaxed/relaxed.
func (o *OpenDKIM) Verify(msg []byte) error {
	record, err := dkim.RecordText(o.Key)
	if err != nil {
		return err
	}
	name := o.Selector + "._domainkey." + o.Domain
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), &msgdkim.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) {
			if domain != name {
				return nil, fmt.Errorf("no TXT record for %s", domain)
			}
			return []string{record}, nil
		},
	})
	if err != nil {
		return err
	}
	if len(vs) == 0 {
		return fmt.Errorf("no DKIM-Signature")
	}
	for _, v := range vs {
		if v.Err != nil {
			return fmt.Errorf("signature d=%s: %v", v.Domain, v.Err)
		}
	}
	h := string(msg[:bytes.Index(msg, []byte("\r\n\r\n"))])
	if !strings.Contains(h, "a=rsa-sha256") || !strings.Contains(h, "c=relaxed/relaxed") || !strings.Contains(h, "d="+o.Domain) || !strings.Contains(h, "s="+o.Selector) {
		return fmt.Errorf("signature is not rsa-sha256, relaxed/relaxed, d=%s, s=%s", o.Domain, o.Selector)
	}
	return nil
}
