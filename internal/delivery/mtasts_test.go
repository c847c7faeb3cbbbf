package delivery_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/mtasts"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

// withPolicy publishes an MTA-STS policy for example.net: the TXT record
// and an HTTPS policy host on loopback with a certificate from the test
// CA. It returns options whose MTA-STS client reaches that host.
func withPolicy(e *env, policy string, mutate ...func(*delivery.Options)) delivery.Options {
	e.t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(policy))
	}))
	srv.TLS = e.CA.ServerTLS(e.t, "mta-sts.example.net")
	srv.StartTLS()
	e.t.Cleanup(srv.Close)
	e.DNS.Add(e.t, `_mta-sts.example.net. 300 IN TXT "v=STSv1; id=20261125;"`)

	opts := e.options()
	for _, m := range mutate {
		m(&opts)
	}
	var d net.Dialer
	opts.MTASTS = mtasts.New(mtasts.Options{
		Resolver: opts.Resolver,
		RootCAs:  e.CA.Pool(),
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != "mta-sts.example.net:443" {
				e.t.Errorf("policy fetched from %s", addr)
			}
			return d.DialContext(ctx, network, srv.Listener.Addr().String())
		},
	})
	return opts
}

const enforceMX1 = "version: STSv1\nmode: enforce\nmx: mx1.example.net\nmx: mx2.example.net\nmax_age: 604800\n"

func TestMTASTSEnforceDeliversOverVerifiedTLS(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "mx1.example.net", smtpsink.Options{})
	d := e.deliverer(withPolicy(e, enforceMX1))
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].TLSVersion == "" || !s.Accepted()[0].TLS {
		t.Error("not delivered over TLS")
	}
	if n := e.metric("mailroom_delivery_connections_total", "verified", "true"); n != 1 {
		t.Errorf("verified connections = %v", n)
	}
}

func TestMTASTSEnforceNeverFallsBackToCleartext(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{}) // no STARTTLS
	d := e.deliverer(withPolicy(e, enforceMX1))
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Deferred, delivery.ReasonMTASTS)
	if !strings.Contains(res[0].Detail, "STARTTLS") {
		t.Errorf("detail %q", res[0].Detail)
	}
	if len(s.Messages()) != 0 {
		t.Fatal("mail went out in cleartext despite an enforce policy")
	}
	for _, c := range s.Conns() {
		if contains(c.Transcript, "MAIL FROM:<noreply@example.com>") {
			t.Errorf("cleartext transaction: %v", c.Transcript)
		}
	}
}

func TestMTASTSEnforceRequiresACertificateForTheMXName(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	s := e.tlsSink("127.0.0.2", "other.example.org", smtpsink.Options{})
	d := e.deliverer(withPolicy(e, enforceMX1))
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Deferred, delivery.ReasonMTASTS)
	if !strings.Contains(res[0].Detail, "certificate") || len(s.Messages()) != 0 {
		t.Errorf("detail %q; sink got %d", res[0].Detail, len(s.Messages()))
	}
}

func TestMTASTSEnforceSkipsMXHostsThePolicyDoesNotList(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	e.DNS.Add(t,
		"example.net. 300 IN MX 10 rogue.example.org.",
		"example.net. 300 IN MX 20 mx2.example.net.",
		"rogue.example.org. 300 IN A 127.0.0.2",
		"mx2.example.net. 300 IN A 127.0.0.3",
	)
	rogue := e.tlsSink("127.0.0.2", "rogue.example.org", smtpsink.Options{})
	mx2 := e.tlsSink("127.0.0.3", "mx2.example.net", smtpsink.Options{})
	d := e.deliverer(withPolicy(e, enforceMX1))
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if len(rogue.Conns()) != 0 || len(mx2.Accepted()) != 1 {
		t.Errorf("rogue connections %d, mx2 messages %d", len(rogue.Conns()), len(mx2.Accepted()))
	}
}

func TestMTASTSEnforceWithNoMatchingMXDefers(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 rogue.example.org.", "rogue.example.org. 300 IN A 127.0.0.2")
	rogue := e.tlsSink("127.0.0.2", "rogue.example.org", smtpsink.Options{})
	d := e.deliverer(withPolicy(e, enforceMX1))
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Deferred, delivery.ReasonMTASTS)
	if !strings.Contains(res[0].Detail, "rogue.example.org") || len(rogue.Conns()) != 0 {
		t.Errorf("detail %q; rogue connections %d", res[0].Detail, len(rogue.Conns()))
	}
}

func TestMTASTSEnforceTriesTheNextMXWhenTLSFails(t *testing.T) {
	e := newEnv(t, "127.0.0.2", "127.0.0.3")
	twoMX(e)
	e.tlsSink("127.0.0.2", "wrong.example.org", smtpsink.Options{})
	mx2 := e.tlsSink("127.0.0.3", "mx2.example.net", smtpsink.Options{})
	d := e.deliverer(withPolicy(e, enforceMX1))
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if res[0].RemoteHost != "mx2.example.net" || len(mx2.Accepted()) != 1 {
		t.Errorf("delivered via %s", res[0].RemoteHost)
	}
	// A TLS failure is not an unreachable server.
	if _, _, down := d.HostDown().Down("127.0.0.2:" + itoa(e.Port)); down {
		t.Error("the server with the bad certificate is remembered as down")
	}
}

func TestMTASTSTestingModeDeliversAndLogs(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	s := e.sink("127.0.0.2", smtpsink.Options{}) // no STARTTLS
	d := e.deliverer(withPolicy(e, strings.Replace(enforceMX1, "enforce", "testing", 1)))
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if len(s.Accepted()) != 1 {
		t.Error("not delivered")
	}
	if len(e.Logs.records("MTA-STS testing policy would refuse this server")) != 1 {
		t.Error("the would-be failure was not logged")
	}
}

func TestIdleConnectionsWithoutVerifiedTLSAreNotUsedUnderEnforce(t *testing.T) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, "example.net. 300 IN MX 10 mx1.example.net.", "mx1.example.net. 300 IN A 127.0.0.2")
	// A certificate the relay cannot verify: good enough opportunistically.
	s := e.tlsSink("127.0.0.2", "someone.else", smtpsink.Options{})
	c := newClock()
	opts := withPolicy(e, enforceMX1, func(o *delivery.Options) {
		r, err := delivery.NewResolver(delivery.ResolverOptions{Servers: []string{e.DNS.Addr}, Timeout: 5 * time.Second, Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		o.Resolver, o.Now, o.IdleTimeout = r, c.Now, time.Hour
	})
	// The domain has not published its policy yet.
	e.DNS.Remove("_mta-sts.example.net", dns.TypeTXT)
	d := e.deliverer(opts)
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@example.net")[0], delivery.Delivered, delivery.ReasonNone)
	if st := d.Destinations(); len(st) != 1 || st[0].Idle != 1 {
		t.Fatalf("no idle connection kept: %+v", st)
	}

	// Now it does; the idle connection's TLS is not good enough for it.
	e.DNS.Add(t, `_mta-sts.example.net. 300 IN TXT "v=STSv1; id=20261125;"`)
	c.Advance(2 * time.Minute) // past the cached NXDOMAIN
	res := deliver(t, d, message("noreply@example.com", testBody), "a@example.net")
	want(t, res[0], delivery.Deferred, delivery.ReasonMTASTS)
	if n := len(s.Accepted()); n != 1 {
		t.Errorf("%d messages accepted, want only the one from before the policy", n)
	}
}
