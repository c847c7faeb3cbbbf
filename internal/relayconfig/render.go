package relayconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/relay/config"
)

// Paths inside a relay pod. The StatefulSet mounts what these name.
const (
	ConfigDir    = "/etc/mailroom/config"
	TLSDir       = "/etc/mailroom/tls"
	PeerDir      = "/etc/mailroom/peer"
	SpoolDir     = "/var/spool/mailroom"
	MainFile     = "relay.yaml"
	SmarthostKey = "smarthost.yaml"

	HTTPPort = 8080
	PeerPort = 8443
	// APIPort is the relay's HTTP API listener (TLS); the pool's Service
	// maps spec.api.port to it.
	APIPort = 9443

	// NumShards is the fixed number of shard Secrets of a pool.
	NumShards = 16
	// ShardCapacity is the most bytes one shard Secret may hold, below the
	// API server's 1 MiB limit on an object.
	ShardCapacity = 900 << 10
)

// Domain is a SendingDomain admitted to the pool, with its signing key.
type Domain struct {
	Name      string
	Selector  string
	Algorithm string
	KeyPEM    []byte
}

// PreviousPassword is a rotated-out password hash that works until NotAfter.
type PreviousPassword struct {
	Hash     string
	NotAfter time.Time
}

// Credential is an SMTPCredential admitted to the pool.
type Credential struct {
	Username       string
	PasswordHash   string
	Previous       []PreviousPassword
	AllowedSenders []string
	Limits         v1alpha1.CredentialLimits
	Suspended      bool
	// APIKeyHash and PreviousAPIKeys authenticate the HTTP API as
	// PasswordHash and Previous do SMTP AUTH.
	APIKeyHash      string
	PreviousAPIKeys []PreviousPassword
	// Webhook receives the credential's events; nil for none.
	Webhook *Webhook
}

// Webhook is a credential's event receiver, already checked against the
// pool's allowed targets.
type Webhook struct {
	URL    string
	Secret string
	// Types wanted; empty means all.
	Types []string
}

// Input is everything the configuration depends on.
type Input struct {
	Pool        *v1alpha1.RelayPool
	Domains     []Domain
	Credentials []Credential
	// SmarthostLogin is smarthost.yaml ("username:" and "password:"), or
	// nil for no AUTH at the smarthost.
	SmarthostLogin []byte
	// Members is how many pods exist or are wanted (the larger of the
	// StatefulSet's and the spec's replicas): all of them are peers.
	Members int32
	// Drain names the pods that must hand their queue to the others.
	Drain []string
}

// Rendered is the configuration as Secret data.
type Rendered struct {
	// Main is the data of the main Secret, without the revision applied:
	// see Finish.
	Main map[string][]byte
	// Shards are the data of the shard Secrets, by index.
	Shards [NumShards]map[string][]byte
	// Oversized lists shards above ShardCapacity.
	Oversized []int
	// Base is the main configuration without revision and digests filled
	// in; Finish completes it.
	base config.Config
}

// Names of the pool's objects.
func MainSecretName(pool string) string         { return pool + "-relay-config" }
func ShardSecretName(pool string, i int) string { return fmt.Sprintf("%s-relay-config-%02d", pool, i) }
func ShardFile(i int) string                    { return fmt.Sprintf("shard-%02d.json", i) }

// ShardOf is the shard a domain or credential name lives in.
func ShardOf(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % NumShards)
}

// KeyFile is the file name of a domain's DKIM key in the config directory.
func KeyFile(domain, selector string) string { return "dkim." + domain + "." + selector + ".pem" }

// Render computes the shard data and the main configuration (see Finish).
func Render(in Input) (*Rendered, error) {
	out := &Rendered{}
	shards := [NumShards]config.Shard{}
	for i := range out.Shards {
		out.Shards[i] = map[string][]byte{}
	}
	domains := slices.Clone(in.Domains)
	sort.Slice(domains, func(i, j int) bool { return domains[i].Name < domains[j].Name })
	for _, d := range domains {
		i := ShardOf(d.Name)
		file := KeyFile(d.Name, d.Selector)
		shards[i].Domains = append(shards[i].Domains, config.Domain{Name: d.Name, Keys: []config.DKIMKey{{
			Selector: d.Selector, Algorithm: d.Algorithm, PrivateKeyFile: ConfigDir + "/" + file,
		}}})
		out.Shards[i][file] = d.KeyPEM
	}
	replicas := int32(1)
	if r := in.Pool.Spec.Replicas; r != nil && *r > 1 {
		replicas = *r
	}
	creds := slices.Clone(in.Credentials)
	sort.Slice(creds, func(i, j int) bool { return creds[i].Username < creds[j].Username })
	for _, c := range creds {
		i := ShardOf(c.Username)
		cc := config.Credential{
			Username:       c.Username,
			PasswordHash:   c.PasswordHash,
			AllowedSenders: slices.Sorted(slices.Values(c.AllowedSenders)),
			Suspended:      c.Suspended,
			Limits: config.SenderLimits{
				MessagesPerMinute:    perPod(c.Limits.MessagesPerMinute, replicas),
				MessagesPerDay:       perPod(c.Limits.MessagesPerDay, replicas),
				RecipientsPerMessage: int(c.Limits.RecipientsPerMessage),
			},
		}
		cc.PreviousPasswordHashes = previousHashes(c.Previous)
		cc.APIKeyHash = c.APIKeyHash
		cc.PreviousAPIKeyHashes = previousHashes(c.PreviousAPIKeys)
		if w := c.Webhook; w != nil {
			cc.Webhook = &config.Webhook{URL: w.URL, Secret: w.Secret}
			if len(w.Types) > 0 {
				cc.Webhook.Types = slices.Sorted(slices.Values(w.Types))
			}
		}
		shards[i].Credentials = append(shards[i].Credentials, cc)
	}
	for i := range shards {
		b, err := json.MarshalIndent(shards[i], "", " ")
		if err != nil {
			return nil, err
		}
		out.Shards[i][ShardFile(i)] = append(b, '\n')
		size := 0
		for _, v := range out.Shards[i] {
			size += len(v)
		}
		if size > ShardCapacity {
			out.Oversized = append(out.Oversized, i)
		}
	}

	base, err := mainConfig(in)
	if err != nil {
		return nil, err
	}
	out.base = base
	out.Main = map[string][]byte{}
	if in.SmarthostLogin != nil {
		out.Main[SmarthostKey] = in.SmarthostLogin
	}
	return out, nil
}

func previousHashes(prev []PreviousPassword) []config.PreviousPasswordHash {
	var out []config.PreviousPasswordHash
	for _, p := range prev {
		out = append(out, config.PreviousPasswordHash{Hash: p.Hash, NotAfter: metav1.NewTime(p.NotAfter.UTC().Truncate(time.Second))})
	}
	return out
}

// perPod splits a pool-wide per-credential limit across the replicas,
// rounding up: a client spread evenly over the pods gets the whole limit.
func perPod(limit int32, replicas int32) int {
	if limit <= 0 {
		return 0
	}
	return int(math.Ceil(float64(limit) / float64(replicas)))
}

// Finish fills in the revision and the shards' digests and returns the
// main Secret's data.
func (r *Rendered) Finish(revision int64) (map[string][]byte, error) {
	c := r.base
	c.Revision = revision
	c.Include = nil
	for i := range r.Shards {
		sum := sha256.Sum256(r.Shards[i][ShardFile(i)])
		c.Include = append(c.Include, config.Include{File: ConfigDir + "/" + ShardFile(i), SHA256: hex.EncodeToString(sum[:])})
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range r.Main {
		data[k] = v
	}
	data[MainFile] = append([]byte("# Rendered by mailroom from RelayPool, SendingDomain and SMTPCredential objects; do not edit.\n"), b...)
	return data, nil
}

func mainConfig(in Input) (config.Config, error) {
	p := in.Pool
	s := p.Spec
	c := config.Config{
		Hostname: s.Hostname,
		Listeners: config.Listeners{
			Submission:  fmt.Sprintf(":%d", s.Submission.StartTLSPort),
			Submissions: fmt.Sprintf(":%d", s.Submission.ImplicitTLSPort),
			HTTP:        fmt.Sprintf(":%d", HTTPPort),
			Peer:        fmt.Sprintf(":%d", PeerPort),
		},
		TLS: config.TLS{CertFile: TLSDir + "/tls.crt", KeyFile: TLSDir + "/tls.key"},
		Limits: config.Limits{
			MaxRecipients: int(s.Submission.MaxRecipients),
		},
		Queue: config.Queue{Directory: SpoolDir},
		Delivery: config.Delivery{
			Mode:                    string(s.Delivery.Mode),
			MaxConnectionsPerDomain: int(s.Delivery.MaxConnectionsPerDomain),
			Resolvers:               slices.Clone(s.Delivery.Resolvers),
		},
		Peer: &config.Peer{
			CAFile:   PeerDir + "/ca.crt",
			CertFile: PeerDir + "/tls.crt",
			KeyFile:  PeerDir + "/tls.key",
		},
		Drain: slices.Sorted(slices.Values(in.Drain)),
	}
	if s.Submission.MaxMessageSize != "" {
		q, err := resource.ParseQuantity(s.Submission.MaxMessageSize)
		if err != nil {
			return c, fmt.Errorf("spec.submission.maxMessageSize: %w", err)
		}
		c.Limits.MaxMessageSize = &q
	}
	if APIEnabled(p) {
		c.Listeners.API = fmt.Sprintf(":%d", APIPort)
	}
	c.Events.AllowedTargets = slices.Clone(s.Events.AllowedTargets)
	if s.ProxyProtocol != nil {
		c.ProxyProtocol = &config.ProxyProtocol{TrustedCIDRs: slices.Clone(s.ProxyProtocol.TrustedCIDRs)}
	}
	for i := int32(0); i < in.Members; i++ {
		c.Peer.Addresses = append(c.Peer.Addresses, fmt.Sprintf("%s-%d.%s.%s.svc:%d", StatefulSetName(p.Name), i, HeadlessServiceName(p.Name), p.Namespace, PeerPort))
	}
	if sh := s.Delivery.Smarthost; s.Delivery.Mode == v1alpha1.DeliveryModeSmarthost && sh != nil {
		c.Delivery.Smarthost = config.Smarthost{Host: sh.Host, Port: int(sh.Port), TLS: string(sh.TLS)}
		if in.SmarthostLogin != nil {
			c.Delivery.Smarthost.CredentialsFile = ConfigDir + "/" + SmarthostKey
		}
	}
	r := s.Delivery.Retry
	for _, st := range r.Schedule {
		c.Delivery.Retry.Schedule = append(c.Delivery.Retry.Schedule, st.Duration)
	}
	c.Delivery.Retry.MaxAge = r.MaxAge
	c.Delivery.Retry.DelayWarningAfter = r.DelayWarningAfter
	return c, nil
}

// Names of the pool's workload objects, shared with the StatefulSet and
// Service builders.
func StatefulSetName(pool string) string     { return pool + "-relay" }
func ServiceName(pool string) string         { return pool + "-relay" }
func HeadlessServiceName(pool string) string { return pool + "-relay-headless" }

// Endpoint is the host name applications use as SMTP host.
func Endpoint(pool *v1alpha1.RelayPool) string {
	return ServiceName(pool.Name) + "." + pool.Namespace + ".svc.cluster.local"
}

// APIEnabled reports whether the pool serves the HTTP API.
func APIEnabled(pool *v1alpha1.RelayPool) bool {
	return pool.Spec.API.Enabled == nil || *pool.Spec.API.Enabled
}

// APIServicePort is the HTTP API's port on the pool's Service.
func APIServicePort(pool *v1alpha1.RelayPool) int32 {
	if p := pool.Spec.API.Port; p != 0 {
		return p
	}
	return 443
}

// APIURL is the base URL applications call the HTTP API at. The
// operator-issued certificate names <service>.<namespace>.svc.
func APIURL(pool *v1alpha1.RelayPool) string {
	return fmt.Sprintf("https://%s.%s.svc:%d", ServiceName(pool.Name), pool.Namespace, APIServicePort(pool))
}

// ShutdownBudget is how long a relay pod needs to stop cleanly with this
// configuration: the pod's terminationGracePeriodSeconds.
func (r *Rendered) ShutdownBudget() time.Duration {
	c := r.base
	c.SetDefaults()
	return config.ShutdownBudget(&c)
}

// Validate checks the rendered configuration with the relay's own
// validation, reading the shards from memory: a configuration the relay
// would refuse is never written.
func (r *Rendered) Validate() error {
	c := r.base
	for i := range r.Shards {
		var sh config.Shard
		if err := json.Unmarshal(r.Shards[i][ShardFile(i)], &sh); err != nil {
			return err
		}
		c.Domains = append(c.Domains, sh.Domains...)
		c.Credentials = append(c.Credentials, sh.Credentials...)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return fmt.Errorf("the relay would refuse this configuration: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// ReadShard decodes the shard file in a shard Secret's data: what the
// controllers read to tell whether a domain or login is in the
// configuration.
func ReadShard(data map[string][]byte) (config.Shard, error) {
	var sh config.Shard
	for i := range NumShards {
		if b, ok := data[ShardFile(i)]; ok {
			err := json.Unmarshal(b, &sh)
			return sh, err
		}
	}
	return sh, fmt.Errorf("no shard file")
}
