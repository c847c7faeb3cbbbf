package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

// docExample extracts the example file from the package documentation, so
// the documented example is the one that is tested.
func docExample(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, "//\thostname:") || strings.HasPrefix(line, "//\t# Name used") {
			in = true
		}
		if in {
			if line != "//" && !strings.HasPrefix(line, "//\t") {
				break
			}
			b.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "//"), "\t") + "\n")
		}
	}
	if b.Len() == 0 {
		t.Fatal("no example in doc.go")
	}
	return b.String()
}

func TestDocumentedExampleIsValid(t *testing.T) {
	c, err := Parse([]byte(docExample(t)))
	if err != nil {
		t.Fatalf("the example in the package doc does not load: %v", err)
	}
	if c.Hostname != "relay.example.com" || len(c.Credentials) != 1 || c.Credentials[0].Limits.MessagesPerMinute != 60 {
		t.Fatalf("example parsed wrongly: %+v", c)
	}
	if got := c.Limits.MaxMessageSize.Value(); got != 25<<20 {
		t.Fatalf("maxMessageSize = %d", got)
	}
	if c.Delivery.Retry.MaxAge.Duration != 120*time.Hour || len(c.Delivery.Retry.Schedule) != 5 {
		t.Fatalf("retry: %+v", c.Delivery.Retry)
	}
}

const minimal = `
hostname: relay.example.com
tls: {certFile: /tls/tls.crt, keyFile: /tls/tls.key}
queue: {directory: /var/spool/mailroom}
`

func TestMinimalFileGetsSecureDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.Submission != ":587" || c.Listeners.Submissions != ":465" || c.TLS.MinVersion != "1.2" {
		t.Errorf("listener/TLS defaults: %+v %+v", c.Listeners, c.TLS)
	}
	if len(c.TrustedNetworks) != 0 {
		t.Errorf("trusted networks must be empty by default")
	}
	if c.Limits.MaxRecipients != 100 || c.Limits.CommandTimeout.Duration != 5*time.Minute || c.Limits.DataTimeout.Duration != 3*time.Minute {
		t.Errorf("limit defaults: %+v", c.Limits)
	}
	if c.Delivery.Mode != ModeDirect || c.Delivery.Paused || c.Delivery.Smarthost.TLS != TLSRequired {
		t.Errorf("delivery defaults: %+v", c.Delivery)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name, yaml, field string
	}{
		{"unknown field", minimal + "hostnmae: x\n", `unknown field "hostnmae"`},
		{"missing hostname", strings.Replace(minimal, "hostname: relay.example.com", "", 1), "hostname: Required"},
		{"plaintext password", minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k}]}]
credentials: [{username: u, passwordHash: hunter2, allowedSenders: [example.com]}]`, "credentials[0].passwordHash"},
		{"sender outside the domains", minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k}]}]
credentials: [{username: u, passwordHash: "$2a$10$px0zTPYlw26dgyZYlGwb4.ClsLZiSnEqx3vW/M/JRTtkIq2CMBrIi", allowedSenders: [example.com, evil.org]}]`, "credentials[0].allowedSenders[1]"},
		{"duplicate user", minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k}]}]
credentials:
- {username: u, passwordHash: "$2a$10$px0zTPYlw26dgyZYlGwb4.ClsLZiSnEqx3vW/M/JRTtkIq2CMBrIi", allowedSenders: [example.com]}
- {username: u, passwordHash: "$2a$10$px0zTPYlw26dgyZYlGwb4.ClsLZiSnEqx3vW/M/JRTtkIq2CMBrIi", allowedSenders: [example.com]}`, "credentials[1].username: Duplicate"},
		{"unknown algorithm", minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: RSA1024, privateKeyFile: /k}]}]`, "domains[0].keys[0].algorithm: Unsupported"},
		{"domain without keys", minimal + `
domains: [{name: example.com}]`, "domains[0].keys: Required"},
		{"trusting everyone", minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k}]}]
trustedNetworks: [{name: all, cidrs: [0.0.0.0/0], allowedSenders: [example.com]}]`, "trustedNetworks[0].cidrs[0]"},
		{"trusted network without senders", minimal + `
trustedNetworks: [{name: n, cidrs: [10.0.0.0/8]}]`, "trustedNetworks[0].allowedSenders: Required"},
		{"relative queue dir", strings.Replace(minimal, "/var/spool/mailroom", "spool", 1), "queue.directory"},
		{"smarthost without host", minimal + "delivery: {mode: Smarthost}\n", "delivery.smarthost.host: Required"},
		{"credentials in clear", minimal + "delivery: {mode: Smarthost, smarthost: {host: mx.example.net, tls: None, credentialsFile: /c}}\n", "delivery.smarthost.tls"},
		{"bad duration", minimal + "limits: {commandTimeout: -1s}\n", "limits.commandTimeout"},
		{"negative rate", minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k}]}]
credentials: [{username: u, passwordHash: "$2a$10$px0zTPYlw26dgyZYlGwb4.ClsLZiSnEqx3vW/M/JRTtkIq2CMBrIi", allowedSenders: [example.com], limits: {messagesPerDay: -1}}]`, "credentials[0].limits.messagesPerDay"},
		{"tls 1.0", strings.Replace(minimal, "keyFile: /tls/tls.key", "keyFile: /tls/tls.key, minVersion: '1.0'", 1), "tls.minVersion: Unsupported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %q", err, tc.field)
			}
		})
	}
}

func TestPasswordHashNeverAppearsInErrors(t *testing.T) {
	_, err := Parse([]byte(minimal + `
domains: [{name: example.com, keys: [{selector: s1, algorithm: Ed25519, privateKeyFile: /k}]}]
credentials: [{username: u, passwordHash: "correct-horse-battery", allowedSenders: [example.com]}]`))
	if err == nil || strings.Contains(err.Error(), "correct-horse-battery") {
		t.Fatalf("error %v", err)
	}
}

func TestSigningDomainIsTheClosestListedParent(t *testing.T) {
	domains := map[string]bool{"example.com": true, "mail.shop.example.com": true}
	for from, want := range map[string]string{
		"example.com":             "example.com",
		"shop.example.com":        "example.com",
		"mail.shop.example.com":   "mail.shop.example.com",
		"a.mail.shop.example.com": "mail.shop.example.com",
		"example.org":             "",
		"com":                     "",
	} {
		if got := SigningDomain(from, domains); got != want {
			t.Errorf("SigningDomain(%q) = %q, want %q", from, got, want)
		}
	}
}

func TestAdminListenerMustBeLoopbackAndNotAnSMTPPort(t *testing.T) {
	base := "hostname: relay.example.com\ntls: {certFile: /c, keyFile: /k}\nqueue: {directory: /q}\n"
	for _, tc := range []struct{ listeners, want string }{
		{`listeners: {admin: "0.0.0.0:8081"}`, "listeners.admin"},
		{`listeners: {admin: ":8081"}`, "listeners.admin"},
		{`listeners: {submission: "127.0.0.1:587", admin: "127.0.0.2:587"}`, "must not share a port with the SMTP listeners"},
		{`delivery: {smarthost: {tls: Always}}`, "delivery.smarthost.tls"},
	} {
		_, err := Parse([]byte(base + tc.listeners + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.listeners, err, tc.want)
		}
	}
	c, err := Parse([]byte(base + "delivery: {mode: Smarthost, smarthost: {host: up.example.net, port: 465, tls: Implicit}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.Admin != "127.0.0.1:8081" || c.Delivery.MXPort != 25 {
		t.Errorf("defaults: admin %q, mxPort %d", c.Listeners.Admin, c.Delivery.MXPort)
	}
}
