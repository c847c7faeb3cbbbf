package delivery_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/testutil/smtpsink"
)

const upstream = "smtp.upstream.test"

// smarthostEnv publishes the upstream's name at 127.0.0.2 and writes a
// credentials file; the recipient domains have no DNS at all: everything
// goes to the upstream.
func smarthostEnv(t *testing.T, tlsMode delivery.SmarthostTLS, password string) (*env, delivery.Options) {
	e := newEnv(t, "127.0.0.2")
	e.DNS.Add(t, upstream+". 300 IN A 127.0.0.2")
	opts := e.options()
	opts.Mode = delivery.Smarthost
	opts.Smarthost = delivery.SmarthostOptions{Host: upstream, Port: e.Port, TLS: tlsMode}
	if password != "" {
		opts.Smarthost.CredentialsFile = writeCredentials(t, "relay@example.com", password)
	}
	return e, opts
}

func writeCredentials(t *testing.T, user, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "credentials.yaml")
	writeFile(t, path, "username: "+user+"\npassword: "+password+"\n")
	return path
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

var users = map[string]string{"relay@example.com": "s3cret"}

func TestSmarthostCarriesEveryDomainInOneTransactionAfterAUTH(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSRequired, "s3cret")
	s := e.tlsSink("127.0.0.2", upstream, smtpsink.Options{Users: users})
	d := e.deliverer(opts)
	res := deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test", "b@example.org", "c@gmail.test")
	for _, r := range res {
		want(t, r, delivery.Delivered, delivery.ReasonNone)
		if r.RemoteHost != upstream || r.TLSVersion == "" {
			t.Errorf("result %+v", r)
		}
	}
	msgs := s.Accepted()
	if len(msgs) != 1 || len(msgs[0].Rcpts) != 3 || msgs[0].AuthUser != "relay@example.com" || !msgs[0].TLS {
		t.Fatalf("upstream got %+v", msgs)
	}
	// Nothing but EHLO and STARTTLS in cleartext: no credentials.
	if tr := s.Conns()[0].Transcript; strings.Join(tr, "|") != "EHLO "+relayName+"|STARTTLS" {
		t.Errorf("cleartext commands: %v", tr)
	}
}

func TestSmarthostWithImplicitTLS(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSImplicit, "s3cret")
	s := e.sink("127.0.0.2", smtpsink.Options{Hostname: upstream, TLS: e.CA.ServerTLS(t, upstream), ImplicitTLS: true, Users: users})
	d := e.deliverer(opts)
	res := deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")
	want(t, res[0], delivery.Delivered, delivery.ReasonNone)
	if m := s.Accepted(); len(m) != 1 || m[0].AuthUser != "relay@example.com" || !m[0].TLS {
		t.Errorf("upstream got %+v", m)
	}
}

func TestSmarthostRequiredTLSRefusesCleartext(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSRequired, "")
	s := e.sink("127.0.0.2", smtpsink.Options{})
	d := e.deliverer(opts)
	res := deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")
	want(t, res[0], delivery.Deferred, delivery.ReasonTLS)
	if len(s.Messages()) != 0 {
		t.Error("sent in cleartext")
	}
}

func TestSmarthostRequiredTLSVerifiesTheCertificate(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSRequired, "s3cret")
	s := e.tlsSink("127.0.0.2", "impostor.example", smtpsink.Options{Users: users})
	d := e.deliverer(opts)
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")[0], delivery.Deferred, delivery.ReasonTLS)
	if len(s.Messages()) != 0 || s.AuthFailures() != 0 {
		t.Error("talked to an impostor")
	}
}

func TestSmarthostCredentialsAreNeverSentInCleartext(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSOpportunistic, "s3cret")
	// An upstream without STARTTLS that would take AUTH in cleartext.
	s := e.sink("127.0.0.2", smtpsink.Options{Users: users, AllowInsecureAuth: true})
	d := e.deliverer(opts)
	res := deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")
	want(t, res[0], delivery.Deferred, delivery.ReasonTLS)
	for _, c := range s.Conns() {
		for _, line := range c.Transcript {
			if strings.HasPrefix(strings.ToUpper(line), "AUTH") {
				t.Errorf("AUTH sent in cleartext: %v", c.Transcript)
			}
		}
	}
	if len(s.Messages()) != 0 {
		t.Error("mail sent")
	}
}

func TestSmarthostWithoutCredentialsMayUseCleartextWhenAllowed(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSNone, "")
	s := e.sink("127.0.0.2", smtpsink.Options{})
	d := e.deliverer(opts)
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")[0], delivery.Delivered, delivery.ReasonNone)
	if len(s.Conns()) != 1 || len(s.Accepted()) != 1 {
		t.Errorf("%d connections, %d messages", len(s.Conns()), len(s.Accepted()))
	}
}

func TestSmarthostRefusingTheCredentialsDefers(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSRequired, "wrong")
	s := e.tlsSink("127.0.0.2", upstream, smtpsink.Options{Users: users})
	d := e.deliverer(opts)
	res := deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")
	want(t, res[0], delivery.Deferred, delivery.ReasonAuth)
	if res[0].Reply.Code != 535 || res[0].Code != "4.7.8" {
		t.Errorf("reply %q code %s", res[0].Reply, res[0].Code)
	}
	if s.AuthFailures() != 1 {
		t.Errorf("%d AUTH failures at the upstream", s.AuthFailures())
	}
}

func TestSmarthostCredentialsAreReadAgainForNewConnections(t *testing.T) {
	e, opts := smarthostEnv(t, delivery.SmarthostTLSRequired, "old-password")
	s := e.tlsSink("127.0.0.2", upstream, smtpsink.Options{Users: users})
	opts.MaxMessagesPerConnection = 1
	d := e.deliverer(opts)
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")[0], delivery.Deferred, delivery.ReasonAuth)
	// The Secret is rotated; the relay is not restarted.
	writeFile(t, opts.Smarthost.CredentialsFile, "username: relay@example.com\npassword: s3cret\n")
	want(t, deliver(t, d, message("noreply@example.com", testBody), "a@gmail.test")[0], delivery.Delivered, delivery.ReasonNone)
	if len(s.Accepted()) != 1 {
		t.Error("not delivered after the rotation")
	}
}

func TestSmarthostOptionsAreValidated(t *testing.T) {
	e := newEnv(t)
	for name, sh := range map[string]delivery.SmarthostOptions{
		"no host":                 {Port: 587},
		"no port":                 {Host: upstream},
		"credentials without TLS": {Host: upstream, Port: 25, TLS: delivery.SmarthostTLSNone, CredentialsFile: "/x"},
		"unknown TLS":             {Host: upstream, Port: 25, TLS: "Sometimes"},
	} {
		opts := e.options()
		opts.Mode, opts.Smarthost = delivery.Smarthost, sh
		opts.Registerer = nil
		if _, err := delivery.New(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLoadCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials.yaml")
	writeFile(t, path, "username: user\npassword: \"pass word: with colon\"\n")
	c, err := delivery.LoadCredentials(path)
	if err != nil || c.Username != "user" || c.Password != "pass word: with colon" {
		t.Errorf("LoadCredentials = %+v, %v", c, err)
	}
	writeFile(t, path, "username: user\n")
	if _, err := delivery.LoadCredentials(path); err == nil {
		t.Error("no password accepted")
	}
	writeFile(t, path, "username: user\npassword: p\nextra: x\n")
	if _, err := delivery.LoadCredentials(path); err == nil {
		t.Error("an unknown field accepted")
	}
}
