package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"mailroom.io/mailroom/internal/relay/password"
)

// Config is the whole relay configuration file.
type Config struct {
	// Revision is the operator's revision of this configuration, reported
	// on /status and as mailroom_relay_config_revision once applied; 0
	// when the file is written by hand.
	Revision int64 `json:"revision,omitempty"`
	// Include lists shard files whose domains and credentials are merged
	// into this configuration. A configuration is used only when every
	// shard exists with the sha256 given here.
	Include         []Include        `json:"include,omitempty"`
	Hostname        string           `json:"hostname"`
	Listeners       Listeners        `json:"listeners"`
	TLS             TLS              `json:"tls"`
	Limits          Limits           `json:"limits"`
	TrustedNetworks []TrustedNetwork `json:"trustedNetworks,omitempty"`
	Domains         []Domain         `json:"domains,omitempty"`
	Credentials     []Credential     `json:"credentials,omitempty"`
	Queue           Queue            `json:"queue"`
	Delivery        Delivery         `json:"delivery"`
	// ProxyProtocol, when set, makes connections from its trustedCIDRs
	// carry a PROXY protocol (v1 or v2) header.
	ProxyProtocol *ProxyProtocol `json:"proxyProtocol,omitempty"`
	// Peer is the pool's internal, mutually authenticated path between
	// relays (queue handover on scale-down).
	Peer *Peer `json:"peer,omitempty"`
	// Drain names pool members (pod names) that must stop taking mail and
	// hand their queue to the other members.
	Drain []string `json:"drain,omitempty"`
	// Events are the delivery events and webhooks.
	Events Events `json:"events,omitempty"`

	// Digest is set by Load and Parse: sha256 over the main file and the
	// shards (see doc.go). It identifies the configuration on /status.
	Digest string `json:"-"`
	// origins name where merged domains and credentials came from, so
	// validation errors point into the right shard.
	origins origins
}

// Include is one shard file of the configuration.
type Include struct {
	// File is an absolute path.
	File string `json:"file"`
	// SHA256 is the lower-case hex sha256 of the file's bytes.
	SHA256 string `json:"sha256"`
}

// Shard is the content of an include file: more domains and credentials,
// with exactly the schemas of Config.Domains and Config.Credentials.
type Shard struct {
	Domains     []Domain     `json:"domains,omitempty"`
	Credentials []Credential `json:"credentials,omitempty"`
}

// ProxyProtocol configures PROXY protocol (v1 and v2) on the SMTP
// listeners.
type ProxyProtocol struct {
	// TrustedCIDRs are the load balancers: connections from them must
	// start with a PROXY header, whose source address the relay then uses
	// for limits, trusted networks, Received: and logs. A PROXY header
	// from any other address closes the connection.
	TrustedCIDRs []string `json:"trustedCIDRs"`
}

// Peer is the pool's internal path.
type Peer struct {
	// CAFile verifies the other members' certificates (client and server).
	CAFile   string `json:"caFile"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// Addresses are every pool member's peer address ("host:port"), this
	// one's included.
	Addresses []string `json:"addresses,omitempty"`
	// Self is this member's name (its pod name); default: the environment
	// variable MAILROOM_POD_NAME.
	Self string `json:"self,omitempty"`
}

// PodNameEnv is where Peer.Self comes from when omitted (the downward API).
const PodNameEnv = "MAILROOM_POD_NAME"

// Listeners are the addresses the relay listens on ("host:port").
type Listeners struct {
	Submission  string `json:"submission,omitempty"`
	Submissions string `json:"submissions,omitempty"`
	// HTTP serves /metrics, /healthz, /readyz and /status (plain HTTP).
	HTTP string `json:"http,omitempty"`
	// API is the HTTP send API (/v1/messages and friends), over TLS with
	// the tls section's certificate; empty: no API (the operator renders
	// ":9443").
	API string `json:"api,omitempty"`
	// Peer is the pool's internal listener (mutual TLS); default ":8443"
	// when the peer section is set, otherwise none.
	Peer string `json:"peer,omitempty"`
	// Admin is the admin API (queue and suppression management). It has
	// no authentication, so it must be a loopback address.
	Admin string `json:"admin,omitempty"`
}

// TLS is the server certificate for both SMTP listeners.
type TLS struct {
	CertFile   string `json:"certFile"`
	KeyFile    string `json:"keyFile"`
	MinVersion string `json:"minVersion,omitempty"`
}

// Limits are the server-wide protocol limits.
type Limits struct {
	MaxMessageSize      *resource.Quantity `json:"maxMessageSize,omitempty"`
	MaxRecipients       int                `json:"maxRecipients,omitempty"`
	MaxConnections      int                `json:"maxConnections,omitempty"`
	MaxConnectionsPerIP int                `json:"maxConnectionsPerIP,omitempty"`
	CommandTimeout      *metav1.Duration   `json:"commandTimeout,omitempty"`
	DataTimeout         *metav1.Duration   `json:"dataTimeout,omitempty"`
	AuthFailures        int                `json:"authFailures,omitempty"`
	AuthFailureWindow   *metav1.Duration   `json:"authFailureWindow,omitempty"`
	ShutdownGrace       *metav1.Duration   `json:"shutdownGrace,omitempty"`
	// ShutdownDelay is how long the relay keeps accepting after SIGTERM
	// (or a drain) with readiness already off, while Kubernetes removes it
	// from the Service endpoints.
	ShutdownDelay *metav1.Duration `json:"shutdownDelay,omitempty"`
}

// SenderLimits limit one credential or trusted network; 0 is unlimited.
type SenderLimits struct {
	MessagesPerMinute    int `json:"messagesPerMinute,omitempty"`
	MessagesPerDay       int `json:"messagesPerDay,omitempty"`
	RecipientsPerMessage int `json:"recipientsPerMessage,omitempty"`
}

// TrustedNetwork lets clients from CIDRs submit without AUTH, as
// AllowedSenders only.
type TrustedNetwork struct {
	Name           string       `json:"name"`
	CIDRs          []string     `json:"cidrs"`
	AllowedSenders []string     `json:"allowedSenders"`
	Limits         SenderLimits `json:"limits,omitempty"`
}

// Domain is a domain the relay signs for.
type Domain struct {
	Name string    `json:"name"`
	Keys []DKIMKey `json:"keys"`
}

// DKIMKey is one selector's signing key.
type DKIMKey struct {
	Selector       string `json:"selector"`
	Algorithm      string `json:"algorithm"`
	PrivateKeyFile string `json:"privateKeyFile"`
}

// Credential is one SMTP login.
type Credential struct {
	Username     string `json:"username"`
	PasswordHash string `json:"passwordHash"`
	// PreviousPasswordHashes keep rotated-out passwords working until
	// their notAfter, checked at AUTH time against the relay's clock.
	PreviousPasswordHashes []PreviousPasswordHash `json:"previousPasswordHashes,omitempty"`
	AllowedSenders         []string               `json:"allowedSenders"`
	Limits                 SenderLimits           `json:"limits,omitempty"`
	Suspended              bool                   `json:"suspended,omitempty"`
	// APIKeyHashes authenticate the HTTP API's bearer keys, hashed like
	// PasswordHash; a rotated-out key stays until its notAfter.
	APIKeyHash           string                 `json:"apiKeyHash,omitempty"`
	PreviousAPIKeyHashes []PreviousPasswordHash `json:"previousAPIKeyHashes,omitempty"`
	// Webhook is where this credential's delivery events are posted.
	Webhook *Webhook `json:"webhook,omitempty"`
}

// Webhook is one credential's event receiver (Standard Webhooks).
type Webhook struct {
	// URL is http or https; its host must be allowed by
	// events.allowedTargets.
	URL string `json:"url"`
	// Secret is the signing secret in the Standard Webhooks form
	// "whsec_<base64>"; the signature is HMAC-SHA256 under its decoded
	// bytes.
	Secret string `json:"secret"`
	// Types are the event types wanted; empty: all.
	Types []string `json:"types,omitempty"`
}

// Events configures delivery events and their webhooks.
type Events struct {
	// AllowedTargets are the hosts webhooks may be posted to: exact host
	// names, ".suffix" for every name under it (".svc.cluster.local"), or
	// CIDRs for literal addresses. Empty: names under .svc and
	// .svc.cluster.local only.
	AllowedTargets []string `json:"allowedTargets,omitempty"`
	// Retention is how long an event is kept and retried; default 24h.
	Retention *metav1.Duration `json:"retention,omitempty"`
}

// PreviousPasswordHash is a password that still works until NotAfter.
type PreviousPasswordHash struct {
	Hash     string      `json:"hash"`
	NotAfter metav1.Time `json:"notAfter"`
}

// Queue is the spool.
type Queue struct {
	Directory    string             `json:"directory"`
	MinFreeSpace *resource.Quantity `json:"minFreeSpace,omitempty"`
}

// Delivery settings are read by the delivery side of the relay.
type Delivery struct {
	Paused                  bool      `json:"paused,omitempty"`
	Mode                    string    `json:"mode,omitempty"`
	Smarthost               Smarthost `json:"smarthost,omitempty"`
	Retry                   Retry     `json:"retry,omitempty"`
	MaxConnectionsPerDomain int       `json:"maxConnectionsPerDomain,omitempty"`
	Resolvers               []string  `json:"resolvers,omitempty"`
	// MXPort is the port of MX hosts; 25 unless a test network says
	// otherwise.
	MXPort int `json:"mxPort,omitempty"`
	// Concurrency bounds the delivery attempts in progress at once.
	Concurrency int `json:"concurrency,omitempty"`
	// SuppressionTTL is how long an address refused as unknown stays on
	// the suppression list.
	SuppressionTTL *metav1.Duration `json:"suppressionTTL,omitempty"`
	// ShutdownGrace is how long deliveries in progress may finish at
	// shutdown before they are cut off (and retried after restart).
	ShutdownGrace *metav1.Duration `json:"shutdownGrace,omitempty"`
}

// Smarthost is the upstream relay used in Smarthost mode.
type Smarthost struct {
	Host            string `json:"host,omitempty"`
	Port            int    `json:"port,omitempty"`
	CredentialsFile string `json:"credentialsFile,omitempty"`
	TLS             string `json:"tls,omitempty"`
}

// Retry is the retry and give-up policy.
type Retry struct {
	Schedule          []metav1.Duration `json:"schedule,omitempty"`
	MaxAge            *metav1.Duration  `json:"maxAge,omitempty"`
	DelayWarningAfter *metav1.Duration  `json:"delayWarningAfter,omitempty"`
}

// Delivery modes and smarthost TLS policies.
const (
	ModeDirect    = "Direct"
	ModeSmarthost = "Smarthost"

	TLSRequired      = "Required"
	TLSImplicit      = "Implicit" // RFC 8314 TLS from the first byte, verified (port 465)
	TLSOpportunistic = "Opportunistic"
	TLSNone          = "None"
)

// Algorithms accepted for DKIM keys; the names match the SendingDomain API.
var Algorithms = []string{"RSA2048", "RSA3072", "RSA4096", "Ed25519"}

// Load reads the file at path and its include files, merges them, applies
// defaults and validates. If an include file is missing or its sha256
// differs from the one listed, the error wraps ErrInconsistent: the shards
// are being updated and a later Load will succeed.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse is Load for the main file's bytes (include files are still read
// from disk).
func Parse(data []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, err
	}
	shards, err := c.readIncludes()
	if err != nil {
		return nil, err
	}
	if err := c.merge(shards); err != nil {
		return nil, err
	}
	c.Digest = digest(data, shards)
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := c.checkSelf(); err != nil {
		return nil, err
	}
	return &c, nil
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func qty(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

// SetDefaults fills every omitted field with its documented default.
func (c *Config) SetDefaults() {
	setStr := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setDur := func(p **metav1.Duration, v time.Duration) {
		if *p == nil {
			*p = dur(v)
		}
	}
	setStr(&c.Listeners.Submission, ":587")
	setStr(&c.Listeners.Submissions, ":465")
	setStr(&c.Listeners.HTTP, ":8080")
	setDur(&c.Events.Retention, 24*time.Hour)
	setStr(&c.Listeners.Admin, "127.0.0.1:8081")
	setStr(&c.TLS.MinVersion, "1.2")

	l := &c.Limits
	if l.MaxMessageSize == nil {
		l.MaxMessageSize = qty("25Mi")
	}
	setInt(&l.MaxRecipients, 100)
	setInt(&l.MaxConnections, 1000)
	setInt(&l.MaxConnectionsPerIP, 100)
	setDur(&l.CommandTimeout, 5*time.Minute)
	setDur(&l.DataTimeout, 3*time.Minute)
	setInt(&l.AuthFailures, 5)
	setDur(&l.AuthFailureWindow, 5*time.Minute)
	setDur(&l.ShutdownGrace, 25*time.Second)
	setDur(&l.ShutdownDelay, 5*time.Second)
	if c.Peer != nil {
		setStr(&c.Listeners.Peer, ":8443")
		setStr(&c.Peer.Self, os.Getenv(PodNameEnv))
	}

	if c.Queue.MinFreeSpace == nil {
		c.Queue.MinFreeSpace = qty("256Mi")
	}

	d := &c.Delivery
	setStr(&d.Mode, ModeDirect)
	setInt(&d.Smarthost.Port, 587)
	setStr(&d.Smarthost.TLS, TLSRequired)
	if len(d.Retry.Schedule) == 0 {
		for _, s := range []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour} {
			d.Retry.Schedule = append(d.Retry.Schedule, metav1.Duration{Duration: s})
		}
	}
	setDur(&d.Retry.MaxAge, 120*time.Hour)
	setDur(&d.Retry.DelayWarningAfter, 4*time.Hour)
	setInt(&d.MaxConnectionsPerDomain, 10)
	setInt(&d.MXPort, 25)
	setInt(&d.Concurrency, 200)
	setDur(&d.SuppressionTTL, 30*24*time.Hour)
	setDur(&d.ShutdownGrace, 20*time.Second)
}

// Validate checks the whole configuration. Every problem is reported, each
// naming its field.
func (c *Config) Validate() error {
	var errs field.ErrorList
	p := func(name string) *field.Path { return field.NewPath(name) }

	if c.Hostname == "" {
		errs = append(errs, field.Required(p("hostname"), "the relay's DNS name, used in EHLO and Received:"))
	} else if !isDomainName(c.Hostname) {
		errs = append(errs, field.Invalid(p("hostname"), c.Hostname, "must be a DNS name"))
	}

	lp := p("listeners")
	seen := map[string]string{}
	for _, l := range []struct{ name, addr string }{{"submission", c.Listeners.Submission},
		{"submissions", c.Listeners.Submissions}, {"http", c.Listeners.HTTP}, {"api", c.Listeners.API},
		{"admin", c.Listeners.Admin}, {"peer", c.Listeners.Peer}} {
		name, addr := l.name, l.addr
		if (name == "peer" || name == "api") && addr == "" {
			continue // no peer section, or no HTTP API
		}
		if err := checkListenAddress(addr); err != nil {
			errs = append(errs, field.Invalid(lp.Child(name), addr, err.Error()))
			continue
		}
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			continue // any free port: never a clash
		}
		if other, dup := seen[addr]; dup {
			errs = append(errs, field.Duplicate(lp.Child(name), addr+" (also "+other+")"))
		}
		seen[addr] = name
	}

	if err := checkAdminAddress(c.Listeners); err != nil {
		errs = append(errs, field.Invalid(lp.Child("admin"), c.Listeners.Admin, err.Error()))
	}

	tp := p("tls")
	if c.TLS.CertFile == "" {
		errs = append(errs, field.Required(tp.Child("certFile"), "AUTH is only offered over TLS"))
	}
	if c.TLS.KeyFile == "" {
		errs = append(errs, field.Required(tp.Child("keyFile"), ""))
	}
	if c.TLS.MinVersion != "1.2" && c.TLS.MinVersion != "1.3" {
		errs = append(errs, field.NotSupported(tp.Child("minVersion"), c.TLS.MinVersion, []string{"1.2", "1.3"}))
	}

	errs = append(errs, c.Limits.validate(p("limits"))...)

	errs = append(errs, c.validateIncludes()...)

	domains := map[string]bool{}
	domainAt := map[string]string{}
	for i, d := range c.Domains {
		ip := c.origins.path("domains", i)
		name := strings.ToLower(d.Name)
		switch {
		case d.Name == "":
			errs = append(errs, field.Required(ip.Child("name"), ""))
		case !isDomainName(d.Name) || d.Name != name:
			errs = append(errs, field.Invalid(ip.Child("name"), d.Name, "must be a lower-case DNS name"))
		case domains[name]:
			errs = append(errs, duplicate(ip.Child("name"), d.Name, domainAt[name]))
		}
		domains[name] = true
		if _, ok := domainAt[name]; !ok {
			domainAt[name] = ip.String()
		}
		if len(d.Keys) == 0 {
			errs = append(errs, field.Required(ip.Child("keys"), "at least one DKIM key: the relay never sends unsigned mail"))
		}
		selectors := map[string]bool{}
		for j, k := range d.Keys {
			kp := ip.Child("keys").Index(j)
			if !isDomainName(k.Selector) || strings.Contains(k.Selector, "._domainkey") {
				errs = append(errs, field.Invalid(kp.Child("selector"), k.Selector, "must be a DNS label sequence such as mr-20261125"))
			} else if selectors[k.Selector] {
				errs = append(errs, field.Duplicate(kp.Child("selector"), k.Selector))
			}
			selectors[k.Selector] = true
			if !contains(Algorithms, k.Algorithm) {
				errs = append(errs, field.NotSupported(kp.Child("algorithm"), k.Algorithm, Algorithms))
			}
			if k.PrivateKeyFile == "" {
				errs = append(errs, field.Required(kp.Child("privateKeyFile"), ""))
			}
		}
	}

	users := map[string]bool{}
	userAt := map[string]string{}
	for i, cr := range c.Credentials {
		ip := c.origins.path("credentials", i)
		switch {
		case cr.Username == "":
			errs = append(errs, field.Required(ip.Child("username"), ""))
		case strings.ContainsFunc(cr.Username, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			errs = append(errs, field.Invalid(ip.Child("username"), cr.Username, "must not contain spaces or control characters"))
		case users[cr.Username]:
			errs = append(errs, duplicate(ip.Child("username"), cr.Username, userAt[cr.Username]))
		}
		users[cr.Username] = true
		if _, ok := userAt[cr.Username]; !ok {
			userAt[cr.Username] = ip.String()
		}
		if cr.PasswordHash == "" {
			errs = append(errs, field.Required(ip.Child("passwordHash"), "a $mr-sha256$, bcrypt or argon2id hash"))
		} else if err := password.Check(cr.PasswordHash); err != nil {
			errs = append(errs, field.Invalid(ip.Child("passwordHash"), field.OmitValueType{}, err.Error()))
		}
		for j, ph := range cr.PreviousPasswordHashes {
			pp := ip.Child("previousPasswordHashes").Index(j)
			if ph.Hash == "" {
				errs = append(errs, field.Required(pp.Child("hash"), ""))
			} else if err := password.Check(ph.Hash); err != nil {
				errs = append(errs, field.Invalid(pp.Child("hash"), field.OmitValueType{}, err.Error()))
			}
			if ph.NotAfter.IsZero() {
				errs = append(errs, field.Required(pp.Child("notAfter"), "an RFC 3339 time after which the old password stops working"))
			}
		}
		if cr.APIKeyHash != "" {
			if err := password.Check(cr.APIKeyHash); err != nil {
				errs = append(errs, field.Invalid(ip.Child("apiKeyHash"), field.OmitValueType{}, err.Error()))
			}
		}
		for j, ph := range cr.PreviousAPIKeyHashes {
			pp := ip.Child("previousAPIKeyHashes").Index(j)
			if ph.Hash == "" {
				errs = append(errs, field.Required(pp.Child("hash"), ""))
			} else if err := password.Check(ph.Hash); err != nil {
				errs = append(errs, field.Invalid(pp.Child("hash"), field.OmitValueType{}, err.Error()))
			}
			if ph.NotAfter.IsZero() {
				errs = append(errs, field.Required(pp.Child("notAfter"), "an RFC 3339 time after which the old API key stops working"))
			}
		}
		errs = append(errs, validateSenders(ip.Child("allowedSenders"), cr.AllowedSenders, domains)...)
		errs = append(errs, cr.Limits.validate(ip.Child("limits"))...)
	}

	nets := map[string]bool{}
	np := p("trustedNetworks")
	for i, tn := range c.TrustedNetworks {
		ip := np.Index(i)
		if tn.Name == "" {
			errs = append(errs, field.Required(ip.Child("name"), "used in logs, metrics and Received:"))
		} else if nets[tn.Name] {
			errs = append(errs, field.Duplicate(ip.Child("name"), tn.Name))
		}
		nets[tn.Name] = true
		if len(tn.CIDRs) == 0 {
			errs = append(errs, field.Required(ip.Child("cidrs"), ""))
		}
		for j, s := range tn.CIDRs {
			pfx, err := netip.ParsePrefix(s)
			switch {
			case err != nil:
				errs = append(errs, field.Invalid(ip.Child("cidrs").Index(j), s, "must be a CIDR such as 10.42.7.0/24"))
			case pfx.Bits() == 0:
				errs = append(errs, field.Invalid(ip.Child("cidrs").Index(j), s, "trusting every address would make an open relay"))
			}
		}
		errs = append(errs, validateSenders(ip.Child("allowedSenders"), tn.AllowedSenders, domains)...)
		errs = append(errs, tn.Limits.validate(ip.Child("limits"))...)
	}

	qp := p("queue")
	if c.Queue.Directory == "" {
		errs = append(errs, field.Required(qp.Child("directory"), ""))
	} else if !filepath.IsAbs(c.Queue.Directory) {
		errs = append(errs, field.Invalid(qp.Child("directory"), c.Queue.Directory, "must be an absolute path"))
	}
	if c.Queue.MinFreeSpace != nil && c.Queue.MinFreeSpace.Sign() < 0 {
		errs = append(errs, field.Invalid(qp.Child("minFreeSpace"), c.Queue.MinFreeSpace.String(), "must not be negative"))
	}

	errs = append(errs, c.Delivery.validate(p("delivery"))...)
	errs = append(errs, c.validateProxyProtocol()...)
	errs = append(errs, c.validatePeer()...)
	errs = append(errs, c.validateEvents()...)

	return errs.ToAggregate()
}

func (l *Limits) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if l.MaxMessageSize == nil || l.MaxMessageSize.Value() < 1024 || l.MaxMessageSize.Value() > 1<<31 {
		errs = append(errs, field.Invalid(p.Child("maxMessageSize"), qtyString(l.MaxMessageSize), "must be between 1Ki and 2Gi"))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"maxRecipients", l.MaxRecipients}, {"maxConnections", l.MaxConnections},
		{"maxConnectionsPerIP", l.MaxConnectionsPerIP}, {"authFailures", l.AuthFailures}} {
		name, v := f.name, f.v
		if v < 1 {
			errs = append(errs, field.Invalid(p.Child(name), v, "must be at least 1"))
		}
	}
	for _, f := range []struct {
		name string
		d    *metav1.Duration
	}{{"commandTimeout", l.CommandTimeout}, {"dataTimeout", l.DataTimeout},
		{"authFailureWindow", l.AuthFailureWindow}, {"shutdownGrace", l.ShutdownGrace}} {
		name, d := f.name, f.d
		if d == nil || d.Duration <= 0 {
			errs = append(errs, field.Invalid(p.Child(name), durString(d), "must be positive"))
		}
	}
	if l.ShutdownDelay == nil || l.ShutdownDelay.Duration < 0 {
		errs = append(errs, field.Invalid(p.Child("shutdownDelay"), durString(l.ShutdownDelay), "must not be negative (0s: stop listening at once)"))
	}
	return errs
}

func (l SenderLimits) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, f := range []struct {
		name string
		v    int
	}{{"messagesPerMinute", l.MessagesPerMinute}, {"messagesPerDay", l.MessagesPerDay},
		{"recipientsPerMessage", l.RecipientsPerMessage}} {
		name, v := f.name, f.v
		if v < 0 {
			errs = append(errs, field.Invalid(p.Child(name), v, "must not be negative (0 is unlimited)"))
		}
	}
	return errs
}

func (d *Delivery) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch d.Mode {
	case ModeDirect:
	case ModeSmarthost:
		if d.Smarthost.Host == "" {
			errs = append(errs, field.Required(p.Child("smarthost", "host"), "mode is Smarthost"))
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("mode"), d.Mode, []string{ModeDirect, ModeSmarthost}))
	}
	sp := p.Child("smarthost")
	if d.Smarthost.Host != "" && !isDomainName(d.Smarthost.Host) && net.ParseIP(d.Smarthost.Host) == nil {
		errs = append(errs, field.Invalid(sp.Child("host"), d.Smarthost.Host, "must be a host name or IP address"))
	}
	if d.Smarthost.Port < 1 || d.Smarthost.Port > 65535 {
		errs = append(errs, field.Invalid(sp.Child("port"), d.Smarthost.Port, "must be 1-65535"))
	}
	switch d.Smarthost.TLS {
	case TLSRequired, TLSImplicit, TLSOpportunistic:
	case TLSNone:
		if d.Smarthost.CredentialsFile != "" {
			errs = append(errs, field.Invalid(sp.Child("tls"), d.Smarthost.TLS, "credentials are never sent without TLS"))
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("tls"), d.Smarthost.TLS, []string{TLSRequired, TLSImplicit, TLSOpportunistic, TLSNone}))
	}
	rp := p.Child("retry")
	for i, s := range d.Retry.Schedule {
		if s.Duration <= 0 {
			errs = append(errs, field.Invalid(rp.Child("schedule").Index(i), s.Duration.String(), "must be positive"))
		}
	}
	if d.Retry.MaxAge == nil || d.Retry.MaxAge.Duration <= 0 {
		errs = append(errs, field.Invalid(rp.Child("maxAge"), durString(d.Retry.MaxAge), "must be positive"))
	}
	if d.Retry.DelayWarningAfter == nil || d.Retry.DelayWarningAfter.Duration < 0 {
		errs = append(errs, field.Invalid(rp.Child("delayWarningAfter"), durString(d.Retry.DelayWarningAfter), "must not be negative (0s disables)"))
	}
	if d.MXPort < 1 || d.MXPort > 65535 {
		errs = append(errs, field.Invalid(p.Child("mxPort"), d.MXPort, "must be 1-65535"))
	}
	if d.Concurrency < 1 {
		errs = append(errs, field.Invalid(p.Child("concurrency"), d.Concurrency, "must be at least 1"))
	}
	for _, f := range []struct {
		name string
		d    *metav1.Duration
	}{{"suppressionTTL", d.SuppressionTTL}, {"shutdownGrace", d.ShutdownGrace}} {
		if f.d == nil || f.d.Duration <= 0 {
			errs = append(errs, field.Invalid(p.Child(f.name), durString(f.d), "must be positive"))
		}
	}
	if d.MaxConnectionsPerDomain < 1 {
		errs = append(errs, field.Invalid(p.Child("maxConnectionsPerDomain"), d.MaxConnectionsPerDomain, "must be at least 1"))
	}
	for i, r := range d.Resolvers {
		host := r
		if h, port, err := net.SplitHostPort(r); err == nil {
			host = h
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				errs = append(errs, field.Invalid(p.Child("resolvers").Index(i), r, "bad port"))
				continue
			}
		}
		if net.ParseIP(host) == nil && !isDomainName(host) {
			errs = append(errs, field.Invalid(p.Child("resolvers").Index(i), r, `must be "host" or "host:port"`))
		}
	}
	return errs
}

// validateSenders checks allowed-sender entries: a domain or an address whose
// domain is a signing domain or lies under one, so every accepted message can
// be signed.
func validateSenders(p *field.Path, senders []string, domains map[string]bool) field.ErrorList {
	var errs field.ErrorList
	if len(senders) == 0 {
		errs = append(errs, field.Required(p, "at least one domain or address"))
	}
	for i, s := range senders {
		domain := s
		if at := strings.LastIndexByte(s, '@'); at >= 0 {
			domain = s[at+1:]
			if at == 0 || strings.ContainsAny(s[:at], " <>\"") {
				errs = append(errs, field.Invalid(p.Index(i), s, "must be a domain or an address local@domain"))
				continue
			}
		}
		if !isDomainName(domain) {
			errs = append(errs, field.Invalid(p.Index(i), s, "must be a domain or an address local@domain"))
			continue
		}
		if SigningDomain(strings.ToLower(domain), domains) == "" {
			errs = append(errs, field.Invalid(p.Index(i), s, "not a listed domain nor under one: mail from it could not be signed"))
		}
	}
	return errs
}

// SigningDomain returns the domain in domains that signs for from: from
// itself or its closest listed parent; "" if none.
func SigningDomain(from string, domains map[string]bool) string {
	for d := from; d != ""; {
		if domains[d] {
			return d
		}
		_, rest, ok := strings.Cut(d, ".")
		if !ok {
			break
		}
		d = rest
	}
	return ""
}

// checkAdminAddress keeps the unauthenticated admin API on loopback and
// off the SMTP ports.
func checkAdminAddress(l Listeners) error {
	host, port, err := net.SplitHostPort(l.Admin)
	if err != nil {
		return nil // reported by checkListenAddress
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("the admin API has no authentication: it must listen on a loopback address such as 127.0.0.1:8081")
	}
	for _, smtpAddr := range []string{l.Submission, l.Submissions} {
		if _, p, err := net.SplitHostPort(smtpAddr); err == nil && p == port && port != "0" {
			return fmt.Errorf("must not share a port with the SMTP listeners")
		}
	}
	return nil
}

func checkListenAddress(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf(`must be "host:port" or ":port"`)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port")
	}
	return nil
}

func isDomainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func qtyString(q *resource.Quantity) string {
	if q == nil {
		return ""
	}
	return q.String()
}

func durString(d *metav1.Duration) string {
	if d == nil {
		return ""
	}
	return d.Duration.String()
}
