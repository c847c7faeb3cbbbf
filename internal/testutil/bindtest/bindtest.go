// Package bindtest runs a real BIND 9 name server for tests.
//
// The server is what external-dns' rfc2136 provider and mailroom's DNS
// verification talk to in tests: one primary zone on a free loopback port
// (UDP and TCP) that accepts RFC 2136 dynamic updates and zone transfers
// signed with a TSIG key (hmac-sha256). Tests also use it to change records
// behind the operator's back (SetTXT, Delete, Add) and to look at what the
// zone really serves (Lookup).
//
// named runs in the foreground in a t.TempDir(); t.Cleanup stops it, and when
// the test failed the tail of named's log is printed. Launch runs it outside
// tests (the demo).
package bindtest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const (
	// startTimeout is generous on purpose: named loads quickly, but tests run
	// on loaded 2-core machines next to kube-apiserver builds.
	startTimeout = 60 * time.Second
	// startAttempts covers the window between picking a free port and named
	// binding it, in which another process may take the port.
	startAttempts = 5
	queryTimeout  = 5 * time.Second
	logTailLines  = 60
)

// Server is a running named serving one zone.
type Server struct {
	// Addr is the server's "127.0.0.1:port", for both UDP and TCP.
	Addr string
	// Zone is the served zone as a lower-case FQDN ("example.test.").
	Zone string
	// TSIGKeyName is the key's name as an FQDN ("bindtest-key."), the form
	// miekg/dns and external-dns' --rfc2136-tsig-keyname accept.
	TSIGKeyName string
	// TSIGSecret is the key's secret, base64.
	TSIGSecret string
	// TSIGAlgorithm is the algorithm as BIND and external-dns'
	// --rfc2136-tsig-secret-alg spell it ("hmac-sha256"); miekg/dns wants
	// dns.Fqdn of it.
	TSIGAlgorithm string
	// Dir is named's working directory (config, zone file, journal, log).
	Dir string

	ip      string
	cmd     *exec.Cmd
	log     *lockedBuffer
	exited  chan struct{}
	waitErr error
}

// Start runs named for zone and waits until it answers for the zone's SOA
// over UDP and TCP. It fails the test if named is not installed and cannot be
// installed with hack/install-test-deps.sh.
func Start(t testing.TB, zone string) *Server {
	t.Helper()
	s, err := Launch(findNamed(t), t.TempDir(), zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

// Launch runs named (the binary at path named) for zone in dir, outside a
// test: the demo uses it. The caller stops it with Stop.
func Launch(named, dir, zone string) (*Server, error) {
	return LaunchAt(named, dir, zone, "127.0.0.1", 0)
}

// LaunchAt is Launch on a given IPv4 address and port (0: a free one), e.g.
// a node address pods reach, port 53. A fixed port is tried once.
func LaunchAt(named, dir, zone, ip string, port int) (*Server, error) {
	zone = strings.ToLower(dns.Fqdn(zone))
	if _, ok := dns.IsDomainName(zone); !ok || zone == "." {
		return nil, fmt.Errorf("bindtest: %q is not a zone name", zone)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("bindtest: TSIG secret: %w", err)
	}
	s := &Server{
		Zone:          zone,
		TSIGKeyName:   "bindtest-key.",
		TSIGSecret:    base64.StdEncoding.EncodeToString(secret),
		TSIGAlgorithm: "hmac-sha256",
		Dir:           dir,
		ip:            ip,
	}
	attempts := startAttempts
	if port != 0 {
		attempts = 1
	}
	var lastErr error
	for attempt := 0; attempt < attempts; attempt++ {
		p := port
		if p == 0 {
			var err error
			if p, err = freePort(ip); err != nil {
				return nil, fmt.Errorf("bindtest: free port: %w", err)
			}
		}
		if lastErr = s.start(named, p); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("bindtest: named did not start after %d attempts: %v\n--- named log (tail) ---\n%s", startAttempts, lastErr, s.LogTail(logTailLines))
}

// Stop stops named.
func (s *Server) Stop() { s.kill() }

func findNamed(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("named"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/named"); err == nil {
		return "/usr/sbin/named"
	}
	script := filepath.Join(repoRoot(t), "hack", "install-test-deps.sh")
	out, err := exec.Command("bash", script).CombinedOutput()
	if err != nil {
		t.Fatalf("bindtest: named (Debian package bind9) is not installed and %s failed: %v\n%s", script, err, out)
	}
	for _, p := range []string{"named", "/usr/sbin/named"} {
		if found, err := exec.LookPath(p); err == nil {
			return found
		}
	}
	t.Fatalf("bindtest: named (Debian package bind9) is still missing after %s", script)
	return ""
}

// repoRoot finds the module root from the working directory, which `go test`
// sets to the package under test.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("bindtest: %v", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "hack", "install-test-deps.sh")); err == nil {
				return d
			}
		}
		if filepath.Dir(d) == d {
			t.Fatalf("bindtest: no repository root above %s", dir)
		}
	}
}

// freePort returns a port that is free on ip for both TCP and UDP at the
// time of the call.
func freePort(ip string) (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

func (s *Server) start(named string, port int) error {
	s.Addr = net.JoinHostPort(s.ip, strconv.Itoa(port))
	zoneFile := "db." + strings.TrimSuffix(s.Zone, ".")
	// A fresh zone file per attempt: a failed attempt may have left a journal.
	_ = os.Remove(filepath.Join(s.Dir, zoneFile+".jnl"))
	if err := os.WriteFile(filepath.Join(s.Dir, zoneFile), []byte(s.zoneFile()), 0o644); err != nil {
		return err
	}
	conf := filepath.Join(s.Dir, "named.conf")
	if err := os.WriteFile(conf, []byte(s.config(port, zoneFile)), 0o644); err != nil {
		return err
	}

	s.log = &lockedBuffer{}
	// -g: foreground, all logging to stderr (so it lands in s.log).
	// -n 1: one worker thread; tests never need more, and the machines are small.
	// -4: loopback IPv4 only.
	// No -u: named only drops privileges when asked to, so it runs as the
	// current user, root included; the ports are unprivileged either way.
	args := []string{"-g", "-4", "-n", "1", "-c", conf}
	s.cmd = exec.Command(named, args...)
	s.cmd.Dir = s.Dir
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", named, err)
	}
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("named exited during start-up: %v", s.waitErr)
		default:
		}
		if s.answersSOA("udp") == nil && s.answersSOA("tcp") == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("named did not answer on %s within %s", s.Addr, startTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) answersSOA(network string) error {
	m := new(dns.Msg)
	m.SetQuestion(s.Zone, dns.TypeSOA)
	c := &dns.Client{Net: network, Timeout: time.Second}
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		return fmt.Errorf("SOA query: %s", dns.RcodeToString[r.Rcode])
	}
	return nil
}

func (s *Server) config(port int, zoneFile string) string {
	keyName := strings.TrimSuffix(s.TSIGKeyName, ".")
	return fmt.Sprintf(`options {
	directory %[1]q;
	pid-file %[2]q;
	session-keyfile %[3]q;
	managed-keys-directory %[1]q;
	listen-on port %[4]d { %[10]s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};

// No rndc: the test owns the process.
controls { };

key %[5]q {
	algorithm %[6]s;
	secret %[7]q;
};

zone %[8]q {
	type primary;
	file %[9]q;
	allow-update { key %[5]q; };
	allow-transfer { key %[5]q; };
};
`, s.Dir, filepath.Join(s.Dir, "named.pid"), filepath.Join(s.Dir, "session.key"), port,
		keyName, s.TSIGAlgorithm, s.TSIGSecret, strings.TrimSuffix(s.Zone, "."), zoneFile, s.ip)
}

func (s *Server) zoneFile() string {
	return fmt.Sprintf(`$ORIGIN %[1]s
$TTL 60
@	IN SOA	ns.%[1]s hostmaster.%[1]s ( 1 60 60 3600 30 )
@	IN NS	ns.%[1]s
ns	IN A	127.0.0.1
`, s.Zone)
}

func (s *Server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

func (s *Server) stop(t testing.TB) {
	select {
	case <-s.exited:
		// named died under the test: that is a failure in itself.
		t.Errorf("bindtest: named exited before the end of the test: %v", s.waitErr)
	default:
		s.kill()
	}
	if t.Failed() {
		t.Logf("bindtest: named log (last %d lines):\n%s", logTailLines, s.LogTail(logTailLines))
	}
}

// LogTail returns the last n lines named logged.
func (s *Server) LogTail(n int) string {
	if s.log == nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s.log.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Name turns name into an FQDN: "@" and "" are the apex, a name ending in a
// dot is absolute, a name without one is absolute when it already lies in
// the zone and relative to the zone otherwise ("mr-1._domainkey" →
// "mr-1._domainkey.example.test.").
func (s *Server) Name(name string) string {
	if name == "" || name == "@" {
		return s.Zone
	}
	fq := strings.ToLower(dns.Fqdn(name))
	if strings.HasSuffix(name, ".") || dns.IsSubDomain(s.Zone, fq) {
		return fq
	}
	return fq + s.Zone
}

// SetTXT replaces the TXT RRset at name with one record made of strs, each a
// character-string of at most 255 bytes (miekg/dns rejects longer ones).
func (s *Server) SetTXT(t testing.TB, name string, strs ...string) {
	t.Helper()
	fq := s.Name(name)
	m := new(dns.Msg)
	m.SetUpdate(s.Zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: fq, Rrtype: dns.TypeTXT, Class: dns.ClassINET}}})
	m.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: fq, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: strs}})
	s.update(t, m)
}

// Delete removes the RRset of rrtype at name.
func (s *Server) Delete(t testing.TB, name string, rrtype uint16) {
	t.Helper()
	m := new(dns.Msg)
	m.SetUpdate(s.Zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: s.Name(name), Rrtype: rrtype, Class: dns.ClassINET}}})
	s.update(t, m)
}

// Add adds one record given in zone-file presentation form; relative owner
// names are relative to the zone, and a missing TTL means 60 seconds.
// Example: `mail 300 IN TXT "v=spf1 -all"`.
func (s *Server) Add(t testing.TB, rr string) {
	t.Helper()
	if err := s.AddRecord(rr); err != nil {
		t.Fatal(err)
	}
}

// AddRecord is Add outside a test.
func (s *Server) AddRecord(rr string) error {
	zp := dns.NewZoneParser(strings.NewReader(rr), s.Zone, "")
	zp.SetDefaultTTL(60)
	var rrs []dns.RR
	for r, ok := zp.Next(); ok; r, ok = zp.Next() {
		rrs = append(rrs, r)
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("bindtest: parse %q: %w", rr, err)
	}
	if len(rrs) == 0 {
		return fmt.Errorf("bindtest: no record in %q", rr)
	}
	m := new(dns.Msg)
	m.SetUpdate(s.Zone)
	m.Insert(rrs)
	return s.send(m)
}

func (s *Server) update(t testing.TB, m *dns.Msg) {
	t.Helper()
	if err := s.send(m); err != nil {
		t.Fatal(err)
	}
}

// send signs an RFC 2136 update with the zone's TSIG key and sends it.
func (s *Server) send(m *dns.Msg) error {
	m.SetTsig(s.TSIGKeyName, dns.Fqdn(s.TSIGAlgorithm), 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: queryTimeout, TsigSecret: map[string]string{s.TSIGKeyName: s.TSIGSecret}}
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		return fmt.Errorf("bindtest: update: %w", err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("bindtest: update refused: %s\n%s", dns.RcodeToString[r.Rcode], m)
	}
	return nil
}

// Lookup asks this server (over TCP, so answers are never truncated) for
// name/qtype and returns the answer section. NXDOMAIN and empty answers
// return nil; any other failure fails the test.
func (s *Server) Lookup(t testing.TB, name string, qtype uint16) []dns.RR {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(s.Name(name), qtype)
	c := &dns.Client{Net: "tcp", Timeout: queryTimeout}
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatalf("bindtest: lookup %s %s: %v", s.Name(name), dns.TypeToString[qtype], err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return r.Answer
	default:
		t.Fatalf("bindtest: lookup %s %s: %s", s.Name(name), dns.TypeToString[qtype], dns.RcodeToString[r.Rcode])
		return nil
	}
}

// LookupTXT returns the TXT records at name, each as its list of strings.
func (s *Server) LookupTXT(t testing.TB, name string) [][]string {
	t.Helper()
	var out [][]string
	for _, rr := range s.Lookup(t, name, dns.TypeTXT) {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, txt.Txt)
		}
	}
	return out
}

// lockedBuffer collects named's output; os/exec writes from its own goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
