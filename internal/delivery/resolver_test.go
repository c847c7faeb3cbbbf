package delivery_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/testutil/dnstest"
)

func newResolver(t *testing.T, c *clock, servers ...string) *delivery.Resolver {
	t.Helper()
	opts := delivery.ResolverOptions{Servers: servers, Timeout: 2 * time.Second, Attempts: 1}
	if c != nil {
		opts.Now = c.Now
	}
	r, err := delivery.NewResolver(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hosts(r delivery.Route) []string {
	var out []string
	for _, h := range r.Hosts {
		out = append(out, h.Host)
	}
	return out
}

func TestMXInPreferenceOrderWithEqualsShuffled(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t,
		"example.test. 300 IN MX 20 backup.example.test.",
		"example.test. 300 IN MX 10 mx-a.example.test.",
		"example.test. 300 IN MX 10 mx-b.example.test.",
		"example.test. 300 IN MX 30 last.example.test.",
	)
	r := newResolver(t, nil, ns.Addr)
	orders := map[string]bool{}
	for range 200 {
		route, err := r.LookupMX(context.Background(), "Example.TEST.")
		if err != nil {
			t.Fatal(err)
		}
		h := hosts(route)
		if len(h) != 4 || h[2] != "backup.example.test" || h[3] != "last.example.test" {
			t.Fatalf("order %v", h)
		}
		orders[h[0]+","+h[1]] = true
	}
	if !orders["mx-a.example.test,mx-b.example.test"] || !orders["mx-b.example.test,mx-a.example.test"] {
		t.Errorf("equal preferences always in one order: %v", orders)
	}
}

func TestNoMXMeansTheDomainItself(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t, "example.test. 300 IN A 127.0.0.2")
	route, err := newResolver(t, nil, ns.Addr).LookupMX(context.Background(), "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !route.Implicit || strings.Join(hosts(route), ",") != "example.test" {
		t.Errorf("route = %+v", route)
	}
}

func TestNullMXMeansNoMail(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t, "example.test. 300 IN MX 0 .")
	_, err := newResolver(t, nil, ns.Addr).LookupMX(context.Background(), "example.test")
	if !errors.Is(err, delivery.ErrNullMX) {
		t.Errorf("err = %v, want ErrNullMX", err)
	}
}

func TestNullMXBesideRealOnesIsIgnored(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t, "example.test. 300 IN MX 0 .", "example.test. 300 IN MX 10 mx.example.test.")
	route, err := newResolver(t, nil, ns.Addr).LookupMX(context.Background(), "example.test")
	if err != nil || strings.Join(hosts(route), ",") != "mx.example.test" {
		t.Errorf("route %v, err %v", hosts(route), err)
	}
}

func TestNonexistentDomainIsPermanent(t *testing.T) {
	ns := dnstest.Start(t)
	_, err := newResolver(t, nil, ns.Addr).LookupMX(context.Background(), "nowhere.test")
	var de *delivery.DNSError
	if !errors.As(err, &de) || !de.NotFound || de.Temporary {
		t.Errorf("err = %#v, want NotFound", err)
	}
}

func TestServerFailureIsTemporary(t *testing.T) {
	for _, f := range []dnstest.Fault{dnstest.ServFail, dnstest.Refused, dnstest.Drop} {
		ns := dnstest.Start(t)
		ns.Add(t, "example.test. 300 IN MX 10 mx.example.test.")
		ns.SetFault("example.test", dns.TypeMX, f)
		r := newResolver(t, nil, ns.Addr)
		if f == dnstest.Drop {
			r, _ = delivery.NewResolver(delivery.ResolverOptions{Servers: []string{ns.Addr}, Timeout: 200 * time.Millisecond, Attempts: 1})
		}
		_, err := r.LookupMX(context.Background(), "example.test")
		var de *delivery.DNSError
		if !errors.As(err, &de) || !de.Temporary || de.NotFound {
			t.Errorf("fault %d: err = %#v, want temporary", f, err)
		}
	}
}

func TestTheNextResolverIsAskedWhenOneFails(t *testing.T) {
	broken, good := dnstest.Start(t), dnstest.Start(t)
	broken.SetFault("example.test", dnstest.AnyType, dnstest.ServFail)
	good.Add(t, "example.test. 300 IN MX 10 mx.example.test.")
	route, err := newResolver(t, nil, broken.Addr, good.Addr).LookupMX(context.Background(), "example.test")
	if err != nil || strings.Join(hosts(route), ",") != "mx.example.test" {
		t.Fatalf("route %v, err %v", hosts(route), err)
	}
	if broken.Queries("example.test", dns.TypeMX) != 1 || good.Queries("example.test", dns.TypeMX) != 1 {
		t.Errorf("queries: broken %d, good %d", broken.Queries("example.test", dns.TypeMX), good.Queries("example.test", dns.TypeMX))
	}
}

func TestTruncatedAnswersAreAskedAgainOverTCP(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t, "example.test. 300 IN MX 10 mx.example.test.")
	ns.SetFault("example.test", dns.TypeMX, dnstest.Truncate)
	route, err := newResolver(t, nil, ns.Addr).LookupMX(context.Background(), "example.test")
	if err != nil || strings.Join(hosts(route), ",") != "mx.example.test" {
		t.Fatalf("route %v, err %v", hosts(route), err)
	}
	if n := ns.Queries("example.test", dns.TypeMX); n != 2 {
		t.Errorf("%d queries, want UDP then TCP", n)
	}
}

func TestAnswersAreCachedForTheirTTL(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t, "example.test. 300 IN MX 10 mx.example.test.", "example.test. 60 IN MX 20 mx2.example.test.")
	c := newClock()
	r := newResolver(t, c, ns.Addr)
	lookup := func() {
		t.Helper()
		if _, err := r.LookupMX(context.Background(), "example.test"); err != nil {
			t.Fatal(err)
		}
	}
	lookup()
	c.Advance(59 * time.Second)
	lookup()
	if n := ns.Queries("example.test", dns.TypeMX); n != 1 {
		t.Fatalf("%d queries within the TTL, want 1", n)
	}
	// The shortest TTL of the set counts.
	c.Advance(time.Second)
	lookup()
	if n := ns.Queries("example.test", dns.TypeMX); n != 2 {
		t.Errorf("%d queries after the TTL, want 2", n)
	}
}

func TestNegativeAnswersAreCachedForTheSOAMinimum(t *testing.T) {
	ns := dnstest.Start(t)
	ns.SetNegativeTTL(120)
	c := newClock()
	r := newResolver(t, c, ns.Addr)
	for range 3 {
		_, _ = r.LookupMX(context.Background(), "nowhere.test")
	}
	c.Advance(119 * time.Second)
	_, _ = r.LookupMX(context.Background(), "nowhere.test")
	if n := ns.Queries("nowhere.test", dns.TypeMX); n != 1 {
		t.Fatalf("%d queries within the negative TTL", n)
	}
	c.Advance(time.Second)
	_, _ = r.LookupMX(context.Background(), "nowhere.test")
	if n := ns.Queries("nowhere.test", dns.TypeMX); n != 2 {
		t.Errorf("%d queries after the negative TTL, want 2", n)
	}
}

func TestFailuresAreRememberedBriefly(t *testing.T) {
	ns := dnstest.Start(t)
	ns.SetFault("example.test", dnstest.AnyType, dnstest.ServFail)
	c := newClock()
	r, _ := delivery.NewResolver(delivery.ResolverOptions{Servers: []string{ns.Addr}, Attempts: 1, FailureTTL: 30 * time.Second, Now: c.Now})
	for range 5 {
		_, _ = r.LookupMX(context.Background(), "example.test")
	}
	if n := ns.Queries("example.test", dns.TypeMX); n != 1 {
		t.Fatalf("%d queries for a failing domain, want 1", n)
	}
	ns.ClearFault("example.test", dnstest.AnyType)
	ns.Add(t, "example.test. 300 IN MX 10 mx.example.test.")
	c.Advance(30 * time.Second)
	if _, err := r.LookupMX(context.Background(), "example.test"); err != nil {
		t.Errorf("after the failure TTL: %v", err)
	}
}

func TestLookupIPReturnsBothFamilies(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t, "mx.example.test. 300 IN A 127.0.0.2", "mx.example.test. 300 IN AAAA ::1")
	r := newResolver(t, nil, ns.Addr)
	ips, err := r.LookupIP(context.Background(), "mx.example.test", false)
	want := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("::1")}
	if err != nil || len(ips) != 2 || ips[0] != want[0] || ips[1] != want[1] {
		t.Errorf("IPv4 first: %v, %v", ips, err)
	}
	ips, _ = r.LookupIP(context.Background(), "mx.example.test", true)
	if len(ips) != 2 || ips[0] != want[1] {
		t.Errorf("IPv6 first: %v", ips)
	}
	if _, err := r.LookupIP(context.Background(), "gone.example.test", false); err == nil {
		t.Error("a host without addresses resolved")
	}
}

func TestLookupTXTJoinsStrings(t *testing.T) {
	ns := dnstest.Start(t)
	ns.Add(t, `_mta-sts.example.test. 300 IN TXT "v=STSv1; " "id=20261125;"`)
	txts, err := newResolver(t, nil, ns.Addr).LookupTXT(context.Background(), "_mta-sts.example.test")
	if err != nil || len(txts) != 1 || txts[0] != "v=STSv1; id=20261125;" {
		t.Errorf("TXT = %q, %v", txts, err)
	}
	none, err := newResolver(t, nil, ns.Addr).LookupTXT(context.Background(), "_mta-sts.other.test")
	if err != nil || none != nil {
		t.Errorf("missing TXT = %q, %v; want nil, nil", none, err)
	}
}

func TestResolversDefaultToResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "search svc.cluster.local\nnameserver 127.0.0.53\nnameserver ::1\noptions timeout:3 attempts:4\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := delivery.NewResolver(delivery.ResolverOptions{ResolvConf: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Servers(), ","); got != "127.0.0.53:53,[::1]:53" {
		t.Errorf("servers = %s", got)
	}
	r, _ = delivery.NewResolver(delivery.ResolverOptions{Servers: []string{"127.0.0.1", "127.0.0.1:5353", "::1"}})
	if got := strings.Join(r.Servers(), ","); got != "127.0.0.1:53,127.0.0.1:5353,[::1]:53" {
		t.Errorf("configured servers = %s", got)
	}
}
