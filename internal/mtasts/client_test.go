package mtasts_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/mtasts"
	"mailroom.io/mailroom/internal/testutil/dnstest"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

const enforcePolicy = "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 86400\n"

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// policyServer is the domain's HTTPS policy host on loopback.
type policyServer struct {
	mu       sync.Mutex
	body     string
	status   int
	redirect string
	fetches  int
	hosts    []string // Host headers seen
	dialed   []string // addresses the client asked to dial
}

func (p *policyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fetches++
	p.hosts = append(p.hosts, r.Host)
	if r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	if p.redirect != "" {
		http.Redirect(w, r, p.redirect, http.StatusFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	if p.status != 0 {
		w.WriteHeader(p.status)
	}
	_, _ = w.Write([]byte(p.body))
}

func (p *policyServer) set(f func(*policyServer)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *policyServer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fetches
}

type fixture struct {
	ns     *dnstest.Server
	policy *policyServer
	clock  *clock
	client *mtasts.Client
}

// setup serves example.test's policy with a certificate for certName
// from a test CA, and publishes its TXT record with id "1".
func setup(t *testing.T, certName string) *fixture {
	t.Helper()
	ca := smtpsink.NewCA(t)
	ps := &policyServer{body: enforcePolicy}
	srv := httptest.NewUnstartedServer(ps)
	srv.TLS = ca.ServerTLS(t, certName)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	ns := dnstest.Start(t)
	ns.Add(t, `_mta-sts.example.test. 300 IN TXT "v=STSv1; id=1;"`)
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	r, err := delivery.NewResolver(delivery.ResolverOptions{Servers: []string{ns.Addr}, Timeout: 5 * time.Second, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	client := mtasts.New(mtasts.Options{
		Resolver: r,
		RootCAs:  ca.Pool(),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ps.set(func(p *policyServer) { p.dialed = append(p.dialed, addr) })
			return d.DialContext(ctx, network, srv.Listener.Addr().String())
		},
		FetchTimeout:   30 * time.Second,
		FailureBackoff: 5 * time.Minute,
		Now:            c.Now,
	})
	return &fixture{ns: ns, policy: ps, clock: c, client: client}
}

func (f *fixture) get(t *testing.T) (*mtasts.Policy, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.client.Get(ctx, "Example.Test.")
}

func TestPolicyIsFetchedFromTheWellKnownURL(t *testing.T) {
	f := setup(t, "mta-sts.example.test")
	p, err := f.get(t)
	if err != nil || p == nil {
		t.Fatalf("Get = %v, %v", p, err)
	}
	if p.Mode != mtasts.Enforce || p.ID != "1" || !p.Matches("mx1.example.test") {
		t.Errorf("policy = %+v", p)
	}
	if f.policy.dialed[0] != "mta-sts.example.test:443" || f.policy.hosts[0] != "mta-sts.example.test" {
		t.Errorf("dialed %v, Host %v", f.policy.dialed, f.policy.hosts)
	}
}

func TestPolicyIsCachedWhileTheRecordIDStaysTheSame(t *testing.T) {
	f := setup(t, "mta-sts.example.test")
	for range 5 {
		if p, _ := f.get(t); p == nil {
			t.Fatal("no policy")
		}
	}
	if n := f.policy.count(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	// A new id announces a new policy.
	f.ns.Remove("_mta-sts.example.test", dns.TypeTXT)
	f.ns.Add(t, `_mta-sts.example.test. 300 IN TXT "v=STSv1; id=2;"`)
	f.policy.set(func(p *policyServer) { p.body = strings.Replace(enforcePolicy, "enforce", "testing", 1) })
	f.clock.Advance(301 * time.Second) // past the TXT record's TTL
	p, err := f.get(t)
	if err != nil || p.Mode != mtasts.Testing || p.ID != "2" || f.policy.count() != 2 {
		t.Errorf("after the id changed: %+v, %v, %d fetches", p, err, f.policy.count())
	}
}

func TestPolicyExpiresAfterMaxAge(t *testing.T) {
	f := setup(t, "mta-sts.example.test")
	f.get(t)
	f.clock.Advance(24*time.Hour - time.Second)
	f.get(t)
	if n := f.policy.count(); n != 1 {
		t.Fatalf("%d fetches within max_age", n)
	}
	f.clock.Advance(time.Second)
	if p, _ := f.get(t); p == nil || f.policy.count() != 2 {
		t.Errorf("after max_age: %v, %d fetches, want a new fetch", p, f.policy.count())
	}
}

func TestACachedPolicyOutlivesFailures(t *testing.T) {
	f := setup(t, "mta-sts.example.test")
	if p, _ := f.get(t); p == nil {
		t.Fatal("no policy")
	}

	// A new id whose policy cannot be fetched: the old one still applies.
	f.ns.Remove("_mta-sts.example.test", dns.TypeTXT)
	f.ns.Add(t, `_mta-sts.example.test. 300 IN TXT "v=STSv1; id=2;"`)
	f.policy.set(func(p *policyServer) { p.status = http.StatusInternalServerError })
	f.clock.Advance(301 * time.Second)
	p, err := f.get(t)
	if p == nil || p.ID != "1" || err == nil {
		t.Errorf("fetch failure: %+v, %v; want the cached policy and the error", p, err)
	}

	// DNS trouble: the cached policy still applies.
	f.ns.SetFault("_mta-sts.example.test", dnstest.AnyType, dnstest.ServFail)
	f.clock.Advance(301 * time.Second)
	if p, _ := f.get(t); p == nil || p.ID != "1" {
		t.Errorf("TXT lookup failure: %+v", p)
	}

	// The record is gone: the cached policy applies until it expires.
	f.ns.ClearFault("_mta-sts.example.test", dnstest.AnyType)
	f.ns.Remove("_mta-sts.example.test", dnstest.AnyType)
	f.clock.Advance(301 * time.Second)
	if p, _ := f.get(t); p == nil || p.ID != "1" {
		t.Errorf("record removed: %+v", p)
	}
	f.clock.Advance(24 * time.Hour)
	if p, _ := f.get(t); p != nil {
		t.Errorf("record removed and policy expired: %+v", p)
	}
}

func TestWithoutACachedPolicyAFetchFailureMeansNoPolicy(t *testing.T) {
	for name, break_ := range map[string]func(*policyServer){
		"HTTP 404":    func(p *policyServer) { p.status = http.StatusNotFound },
		"HTTP 500":    func(p *policyServer) { p.status = http.StatusInternalServerError },
		"redirect":    func(p *policyServer) { p.redirect = "https://elsewhere.example.test/policy.txt" },
		"bad syntax":  func(p *policyServer) { p.body = "<html>oops</html>" },
		"too large":   func(p *policyServer) { p.body = enforcePolicy + strings.Repeat("x: y\n", 14000) },
		"policy none": func(p *policyServer) { p.body = "version: STSv1\nmode: none\nmax_age: 86400\n" },
	} {
		t.Run(name, func(t *testing.T) {
			f := setup(t, "mta-sts.example.test")
			f.policy.set(break_)
			p, err := f.get(t)
			if name == "policy none" {
				if err != nil || p == nil || p.Mode != mtasts.None {
					t.Errorf("Get = %+v, %v", p, err)
				}
				return
			}
			if p != nil || err == nil {
				t.Errorf("Get = %+v, %v; want no policy and an error", p, err)
			}
			if name == "redirect" && f.policy.count() != 1 {
				t.Errorf("the redirect was followed: %d requests", f.policy.count())
			}
		})
	}
}

func TestTheHTTPSCertificateMustBeValidForThePolicyHost(t *testing.T) {
	f := setup(t, "www.example.test")
	p, err := f.get(t)
	if p != nil || err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Get = %+v, %v; want a certificate error", p, err)
	}
}

func TestFailedFetchesBackOff(t *testing.T) {
	f := setup(t, "mta-sts.example.test")
	f.policy.set(func(p *policyServer) { p.status = http.StatusServiceUnavailable })
	for range 10 {
		f.get(t)
	}
	if n := f.policy.count(); n != 1 {
		t.Fatalf("%d fetches while backing off, want 1", n)
	}
	f.policy.set(func(p *policyServer) { p.status = 0 })
	f.clock.Advance(5 * time.Minute)
	if p, _ := f.get(t); p == nil || f.policy.count() != 2 {
		t.Errorf("after the backoff: %+v, %d fetches", p, f.policy.count())
	}
}

func TestRecordsOtherThanOneValidSTSRecordMeanNoPolicy(t *testing.T) {
	for name, txts := range map[string][]string{
		"none":              {`"v=spf1 -all"`},
		"two STS records":   {`"v=STSv1; id=1;"`, `"v=STSv1; id=2;"`},
		"invalid STS":       {`"v=STSv1; id=no-dashes;"`},
		"STS beside others": {`"v=STSv1; id=1;"`, `"google-site-verification=x"`},
	} {
		t.Run(name, func(t *testing.T) {
			f := setup(t, "mta-sts.example.test")
			f.ns.Remove("_mta-sts.example.test", dnstest.AnyType)
			for _, txt := range txts {
				f.ns.Add(t, "_mta-sts.example.test. 300 IN TXT "+txt)
			}
			p, _ := f.get(t)
			if got, want := p != nil, name == "STS beside others"; got != want {
				t.Errorf("policy %+v, want one: %v", p, want)
			}
		})
	}
}
