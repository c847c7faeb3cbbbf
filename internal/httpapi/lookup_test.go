package httpapi_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// A credential lists and lifts only the suppressions its own senders'
// mail caused (the entry's senderDomain); another's look absent.
func TestSuppressionsAreScopedToTheCredentialsSenders(t *testing.T) {
	e := newEnv(t)
	add := func(addr, sender string) {
		if err := e.sup.Add(addr, "550 5.1.1 no such user", "mx.example.net", sender); err != nil {
			t.Fatal(err)
		}
	}
	add("gone@example.net", "app@example.com")
	add("theirs@example.net", "app@tight.example.com")
	add("unknown-origin@example.net", "")

	list := func(user, pass string) []string {
		r := e.do(request{method: "GET", path: "/v1/suppressions", user: user, pass: pass})
		if r.status != 200 {
			t.Fatalf("list as %s: %d %s", user, r.status, r.body)
		}
		var out struct{ Suppressions []struct{ Address string } }
		r.json(t, &out)
		var addrs []string
		for _, s := range out.Suppressions {
			addrs = append(addrs, s.Address)
		}
		return addrs
	}
	if got := list(shopUser, shopPass); !slices.Equal(got, []string{"gone@example.net"}) {
		t.Errorf("shop sees %v, want only its own entry", got)
	}
	if got := list(tightUser, tightPass); !slices.Equal(got, []string{"theirs@example.net"}) {
		t.Errorf("tight sees %v", got)
	}

	del := func(addr string) int {
		return e.do(request{method: "DELETE", path: "/v1/suppressions/" + addr, user: shopUser, pass: shopPass}).status
	}
	if c := del("theirs@example.net"); c != http.StatusNotFound {
		t.Errorf("deleting another credential's entry: %d, want 404", c)
	}
	if c := del("unknown-origin@example.net"); c != http.StatusNotFound {
		t.Errorf("deleting an entry of unknown origin: %d, want 404", c)
	}
	if c := del("gone@example.net"); c != http.StatusNoContent {
		t.Errorf("deleting its own entry: %d, want 204", c)
	}
	if _, ok := e.sup.Lookup("gone@example.net"); ok {
		t.Error("entry still suppressed after DELETE")
	}
	if _, ok := e.sup.Lookup("theirs@example.net"); !ok {
		t.Error("another credential's entry was lifted")
	}
}

// The address check reports syntax, MX / null MX / A records from the
// relay's resolver and suppression, and queues nothing.
func TestAddressCheck(t *testing.T) {
	e := newEnv(t)
	e.dns.Add(t, "mail.test. 300 IN MX 10 mx1.mail.test.", "mx1.mail.test. 300 IN A 192.0.2.1", "mail.test. 300 IN A 192.0.2.2")
	e.dns.Add(t, "nullmx.test. 300 IN MX 0 .")
	e.dns.Add(t, "aonly.test. 300 IN A 192.0.2.3")
	if err := e.sup.Add("gone@mail.test", "550 5.1.1 no such user", "mx1.mail.test", ""); err != nil {
		t.Fatal(err)
	}
	type result struct {
		Syntax struct {
			Valid    bool
			Reason   string
			SMTPUTF8 bool
		}
		Domain struct {
			MX     []string
			NullMX bool
			A      bool
		}
		Suppressed bool
	}
	check := func(addr string) result {
		b, _ := json.Marshal(map[string]string{"address": addr})
		r := e.do(request{method: "POST", path: "/v1/addresses/check", contentType: "application/json", body: b,
			bearer: e.shopKey})
		if r.status != 200 {
			t.Fatalf("check %q: %d %s", addr, r.status, r.body)
		}
		var out result
		r.json(t, &out)
		return out
	}
	if r := check("ann@mail.test"); !r.Syntax.Valid || !slices.Equal(r.Domain.MX, []string{"mx1.mail.test"}) || !r.Domain.A || r.Suppressed {
		t.Errorf("ann@mail.test: %+v", r)
	}
	if r := check("gone@mail.test"); !r.Suppressed {
		t.Errorf("gone@mail.test not reported suppressed: %+v", r)
	}
	if r := check("x@nullmx.test"); !r.Domain.NullMX || len(r.Domain.MX) != 0 {
		t.Errorf("x@nullmx.test: %+v", r)
	}
	if r := check("x@aonly.test"); len(r.Domain.MX) != 0 || !r.Domain.A {
		t.Errorf("x@aonly.test: %+v", r)
	}
	if r := check("x@nowhere.test"); r.Domain.A || len(r.Domain.MX) != 0 {
		t.Errorf("x@nowhere.test: %+v", r)
	}
	if r := check("josé@mail.test"); !r.Syntax.Valid || !r.Syntax.SMTPUTF8 {
		t.Errorf("internationalized address: %+v", r)
	}
	for _, bad := range []string{"no-at-sign", "a@[192.0.2.1]", "@mail.test", "a@-bad-.test"} {
		if r := check(bad); r.Syntax.Valid || r.Syntax.Reason == "" {
			t.Errorf("%q: %+v, want invalid with a reason", bad, r)
		}
	}
	if e.q.Len() != 0 {
		t.Errorf("address checks queued %d messages", e.q.Len())
	}
}

// The document is served, and every exchange the tests made was checked
// against it (newContractChecker fails the test on a mismatch).
func TestOpenAPIDocumentIsServed(t *testing.T) {
	e := newEnv(t)
	r := e.do(request{method: "GET", path: "/v1/openapi.yaml"})
	if r.status != 200 || r.header.Get("Content-Type") != "application/yaml" || len(r.body) < 1000 {
		t.Errorf("GET /v1/openapi.yaml: %d %s, %d bytes", r.status, r.header.Get("Content-Type"), len(r.body))
	}
	if e.checks.n.Load() != 1 {
		t.Errorf("contract checker saw %d exchanges, want 1", e.checks.n.Load())
	}
}
