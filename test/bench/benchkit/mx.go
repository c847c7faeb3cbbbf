package benchkit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// PickNet picks a 127.x.y network on which every suffix (".2:25",
// ".53:53", ...) is a free TCP address, so that a benchmark's DNS server
// and MX sinks do not collide with anything else listening on loopback.
func PickNet(suffixes ...string) string {
	for range 50 {
		n := fmt.Sprintf("127.%d.%d", 100+rand.IntN(100), 1+rand.IntN(250))
		free := true
		for _, s := range suffixes {
			l, err := net.Listen("tcp", n+s)
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return n
		}
	}
	log.Fatal("no free 127.x.y network for the benchmark")
	return ""
}

// ServeDNS answers on addr (UDP and TCP), authoritatively, MX <domain> →
// mx.<domain> and A mx.<domain> → ip for each entry; every other name is
// NXDOMAIN (so the relay's MTA-STS lookups find no policy), other types
// of known names are NODATA. It returns what stops the servers.
func ServeDNS(addr string, domains map[string]string) func() {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		resp.Authoritative = true
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		known := false
		for d, ip := range domains {
			switch name {
			case d + ".":
				known = true
				if q.Qtype == dns.TypeMX {
					resp.Answer = append(resp.Answer, &dns.MX{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 300},
						Preference: 10, Mx: "mx." + d + "."})
				}
			case "mx." + d + ".":
				known = true
				if q.Qtype == dns.TypeA {
					resp.Answer = append(resp.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
						A: net.ParseIP(ip)})
				}
			}
		}
		if !known {
			resp.Rcode = dns.RcodeNameError
		}
		if len(resp.Answer) == 0 {
			resp.Ns = append(resp.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: "bench.test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
				Ns: "ns.bench.test.", Mbox: "hostmaster.bench.test.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 300})
		}
		w.WriteMsg(resp)
	})
	var servers []*dns.Server
	for _, netw := range []string{"udp", "tcp"} {
		started := make(chan error, 1)
		s := &dns.Server{Addr: addr, Net: netw, Handler: h, NotifyStartedFunc: func() { started <- nil }}
		go func() {
			if err := s.ListenAndServe(); err != nil {
				started <- err
			}
		}()
		Must(<-started)
		servers = append(servers, s)
	}
	return func() {
		for _, s := range servers {
			s.Shutdown()
		}
	}
}

// SmtpSink is Postfix's smtp-sink with its running counter (-c) read from
// its stdout: the time at which each message count was first shown is the
// time of that message's 250 (smtp-sink updates the counter when it
// receives the final "." and answers at once).
type SmtpSink struct {
	cmd *exec.Cmd

	mu    sync.Mutex
	times []time.Time // times[i]: when the count reached i+1
	done  bool
}

// StartSmtpSink runs smtp-sink (bin) on addr and waits until it listens.
func StartSmtpSink(bin, addr string) *SmtpSink {
	// -u: smtp-sink drops root after binding port 25. The backlog is
	// larger than any burst of connections an MTA opens.
	s := &SmtpSink{cmd: exec.Command(bin, "-c", "-u", "postfix", addr, "1024")}
	out, err := s.cmd.StdoutPipe()
	Must(err)
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	Must(s.cmd.Start())
	go s.read(out)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			log.Fatalf("smtp-sink not listening on %s: %s", addr, stderr.String())
		}
	}
}

// read parses "sess=N quit=N mesg=N" updates separated by CR.
func (s *SmtpSink) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		now := time.Now()
		_, v, ok := strings.Cut(sc.Text(), "mesg=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			continue
		}
		s.mu.Lock()
		for len(s.times) < n {
			s.times = append(s.times, now)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
}

// Count is how many messages the sink has answered 250 to.
func (s *SmtpSink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

// WaitFor returns when the count reached n (the time of the n-th 250), or
// false after d.
func (s *SmtpSink) WaitFor(n int, d time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		if len(s.times) >= n {
			t := s.times[n-1]
			s.mu.Unlock()
			return t, true
		}
		done := s.done
		s.mu.Unlock()
		if done || time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Stop kills the sink.
func (s *SmtpSink) Stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}
