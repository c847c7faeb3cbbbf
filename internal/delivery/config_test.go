package delivery_test

import (
	"strings"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/relay/config"
)

func TestFromConfig(t *testing.T) {
	c, err := config.Parse([]byte(`
hostname: relay.example.com
tls: {certFile: /etc/mailroom/tls/tls.crt, keyFile: /etc/mailroom/tls/tls.key}
queue: {directory: /var/spool/mailroom}
delivery:
  mode: Smarthost
  smarthost: {host: smtp.example.net, port: 465, tls: Implicit, credentialsFile: /etc/mailroom/smarthost.yaml}
  mxPort: 2525
  retry: {schedule: [1m, 10m], maxAge: 48h, delayWarningAfter: 2h}
  maxConnectionsPerDomain: 4
  resolvers: ["10.0.0.10", "10.0.0.11:5353"]
`))
	if err != nil {
		t.Fatal(err)
	}
	got := delivery.FromConfig(c)
	o := got.Options
	if o.Hostname != "relay.example.com" || o.Mode != delivery.Smarthost || o.MaxConnectionsPerDomain != 4 || o.Port != 2525 {
		t.Errorf("options %+v", o)
	}
	if sh := o.Smarthost; sh.Host != "smtp.example.net" || sh.Port != 465 || sh.TLS != delivery.SmarthostTLSImplicit || sh.CredentialsFile != "/etc/mailroom/smarthost.yaml" {
		t.Errorf("smarthost %+v", sh)
	}
	if strings.Join(got.Resolver.Servers, ",") != "10.0.0.10,10.0.0.11:5353" {
		t.Errorf("resolvers %v", got.Resolver.Servers)
	}
	r := got.Retry
	if len(r.Schedule) != 2 || r.Schedule[1] != 10*time.Minute || r.MaxAge != 48*time.Hour || r.DelayWarningAfter != 2*time.Hour || r.Jitter != delivery.DefaultJitter {
		t.Errorf("retry %+v", r)
	}
	if err := r.Validate(); err != nil {
		t.Error(err)
	}
}

func TestFromConfigDefaults(t *testing.T) {
	c, err := config.Parse([]byte(`
hostname: relay.example.com
tls: {certFile: /etc/mailroom/tls/tls.crt, keyFile: /etc/mailroom/tls/tls.key}
queue: {directory: /var/spool/mailroom}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := delivery.FromConfig(c)
	if got.Options.Mode != delivery.Direct || got.Options.MaxConnectionsPerDomain != 10 || len(got.Resolver.Servers) != 0 {
		t.Errorf("options %+v, resolvers %v", got.Options, got.Resolver.Servers)
	}
	if r := got.Retry; len(r.Schedule) != 5 || r.Schedule[4] != time.Hour || r.MaxAge != 120*time.Hour || r.DelayWarningAfter != 4*time.Hour {
		t.Errorf("retry %+v", r)
	}
}
