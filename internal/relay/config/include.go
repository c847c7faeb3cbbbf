package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// ErrInconsistent is wrapped by Load's error when an include file is
// missing or does not have the sha256 the main file lists: Kubernetes
// updates the Secrets of a projected volume one after the other, so for a
// moment the main file and its shards disagree. The relay keeps the
// configuration it runs (or, at startup, waits) until they agree.
var ErrInconsistent = errors.New("config shards are not consistent yet")

// shardFile is one include file as read.
type shardFile struct {
	data  []byte
	shard Shard
}

// origin says where a merged domain or credential came from: the main
// file (root "") or a shard.
type origin struct {
	root  string
	index int
}

type origins struct {
	domains, credentials []origin
}

// path is the field path of the i-th merged entry of kind ("domains" or
// "credentials"), pointing into the file it came from, e.g.
// "include[1](/etc/mailroom/config/shard-1.yaml).credentials[3]".
func (o origins) path(kind string, i int) *field.Path {
	list := o.domains
	if kind == "credentials" {
		list = o.credentials
	}
	if i < len(list) && list[i].root != "" {
		return field.NewPath(list[i].root).Child(kind).Index(list[i].index)
	}
	return field.NewPath(kind).Index(i)
}

func duplicate(p *field.Path, value, first string) *field.Error {
	e := field.Duplicate(p, value)
	if first != "" {
		e.Detail = "also at " + first
	}
	return e
}

// validateIncludes checks the include list itself (no I/O).
func (c *Config) validateIncludes() field.ErrorList {
	var errs field.ErrorList
	seen := map[string]int{}
	for i, inc := range c.Include {
		ip := field.NewPath("include").Index(i)
		switch {
		case inc.File == "":
			errs = append(errs, field.Required(ip.Child("file"), ""))
		case !filepath.IsAbs(inc.File):
			errs = append(errs, field.Invalid(ip.Child("file"), inc.File, "must be an absolute path"))
		default:
			if j, dup := seen[filepath.Clean(inc.File)]; dup {
				errs = append(errs, field.Duplicate(ip.Child("file"), fmt.Sprintf("%s (also include[%d])", inc.File, j)))
			}
			seen[filepath.Clean(inc.File)] = i
		}
		if b, err := hex.DecodeString(inc.SHA256); err != nil || len(b) != sha256.Size || strings.ToLower(inc.SHA256) != inc.SHA256 {
			errs = append(errs, field.Invalid(ip.Child("sha256"), inc.SHA256, "must be the lower-case hex sha256 of the file (64 characters)"))
		}
	}
	return errs
}

// readIncludes reads and parses every include file, checking its sha256.
func (c *Config) readIncludes() ([]shardFile, error) {
	if len(c.Include) == 0 {
		return nil, nil
	}
	if errs := c.validateIncludes(); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	var pending []string
	shards := make([]shardFile, len(c.Include))
	for i, inc := range c.Include {
		ip := field.NewPath("include").Index(i)
		data, err := os.ReadFile(inc.File)
		if errors.Is(err, os.ErrNotExist) {
			pending = append(pending, fmt.Sprintf("%s: %s does not exist", ip.Child("file"), inc.File))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ip.Child("file"), err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != inc.SHA256 {
			pending = append(pending, fmt.Sprintf("%s: %s has sha256 %s, want %s", ip.Child("sha256"), inc.File, got, inc.SHA256))
			continue
		}
		shards[i].data = data
		if err := yaml.UnmarshalStrict(data, &shards[i].shard); err != nil {
			return nil, fmt.Errorf("%s(%s): %w", ip, inc.File, err)
		}
	}
	if len(pending) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInconsistent, strings.Join(pending, "; "))
	}
	return shards, nil
}

// merge appends the shards' domains and credentials, remembering where
// each came from for Validate's errors (duplicates across files included).
func (c *Config) merge(shards []shardFile) error {
	if len(shards) == 0 {
		return nil
	}
	o := origins{}
	for i := range c.Domains {
		o.domains = append(o.domains, origin{index: i})
	}
	for i := range c.Credentials {
		o.credentials = append(o.credentials, origin{index: i})
	}
	for k, sh := range shards {
		root := fmt.Sprintf("include[%d](%s)", k, c.Include[k].File)
		for j, d := range sh.shard.Domains {
			c.Domains = append(c.Domains, d)
			o.domains = append(o.domains, origin{root: root, index: j})
		}
		for j, cr := range sh.shard.Credentials {
			c.Credentials = append(c.Credentials, cr)
			o.credentials = append(o.credentials, origin{root: root, index: j})
		}
	}
	c.origins = o
	return nil
}

// ComputeDigest is the configDigest the relay reports on /status for a
// main file and the sha256 of its include files (in include order): the
// lower-case hex sha256 of the concatenation of sha256(main) and each
// include's 32-byte sha256. The operator can compute it from what it
// renders.
func ComputeDigest(main []byte, includeSHA256 []string) string {
	h := sha256.New()
	m := sha256.Sum256(main)
	h.Write(m[:])
	for _, s := range includeSHA256 {
		b, _ := hex.DecodeString(s)
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func digest(main []byte, shards []shardFile) string {
	sums := make([]string, len(shards))
	for i, sh := range shards {
		s := sha256.Sum256(sh.data)
		sums[i] = hex.EncodeToString(s[:])
	}
	return ComputeDigest(main, sums)
}

// Files returns the include files of c, for watching.
func (c *Config) Files() []string {
	out := make([]string, 0, len(c.Include))
	for _, inc := range c.Include {
		out = append(out, inc.File)
	}
	return out
}

// ShutdownMargin is the fixed part of ShutdownBudget: closing sessions cut
// off at limits.shutdownGrace (at most 5s), stopping the peer and HTTP
// listeners (at most 2s each) and closing the queue.
const ShutdownMargin = 10 * time.Second

// ShutdownBudget is the longest the relay's shutdown sequence can take
// after SIGTERM: limits.shutdownDelay (still accepting, readiness off) +
// limits.shutdownGrace (sessions finish) + delivery.shutdownGrace
// (deliveries finish) + ShutdownMargin. The operator sets the pod's
// terminationGracePeriodSeconds from it. c must have its defaults set (Load
// and Parse do that).
func ShutdownBudget(c *Config) time.Duration {
	d := func(x *metav1.Duration) time.Duration {
		if x == nil {
			return 0
		}
		return x.Duration
	}
	return d(c.Limits.ShutdownDelay) + d(c.Limits.ShutdownGrace) + d(c.Delivery.ShutdownGrace) + ShutdownMargin
}

// Draining reports whether this relay (peer.self) is listed in drain.
func (c *Config) Draining() bool {
	if c.Peer == nil || c.Peer.Self == "" {
		return false
	}
	return contains(c.Drain, c.Peer.Self)
}

func (c *Config) validateProxyProtocol() field.ErrorList {
	if c.ProxyProtocol == nil {
		return nil
	}
	var errs field.ErrorList
	pp := field.NewPath("proxyProtocol", "trustedCIDRs")
	if len(c.ProxyProtocol.TrustedCIDRs) == 0 {
		errs = append(errs, field.Required(pp, "the load balancers' addresses; omit proxyProtocol to disable it"))
	}
	for i, s := range c.ProxyProtocol.TrustedCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			errs = append(errs, field.Invalid(pp.Index(i), s, "must be a CIDR such as 10.0.0.0/8"))
		}
	}
	return errs
}

// checkSelf is the one check of a relay's own configuration that the
// operator's rendering cannot pass: peer.self comes from the pod
// (MAILROOM_POD_NAME), so Validate leaves it out and Load/Parse make it.
func (c *Config) checkSelf() error {
	if c.Peer != nil && c.Peer.Self == "" {
		return field.ErrorList{field.Required(field.NewPath("peer", "self"),
			"this member's name: set peer.self or the environment variable "+PodNameEnv)}.ToAggregate()
	}
	return nil
}

func (c *Config) validatePeer() field.ErrorList {
	var errs field.ErrorList
	dp := field.NewPath("drain")
	seen := map[string]bool{}
	for i, n := range c.Drain {
		switch {
		case n == "":
			errs = append(errs, field.Required(dp.Index(i), "a pool member's name"))
		case seen[n]:
			errs = append(errs, field.Duplicate(dp.Index(i), n))
		}
		seen[n] = true
	}
	if c.Peer == nil {
		if len(c.Drain) > 0 {
			errs = append(errs, field.Required(field.NewPath("peer"), "drain hands the queue to the other members over the peer path"))
		}
		return errs
	}
	pp := field.NewPath("peer")
	for _, f := range []struct{ name, v string }{{"caFile", c.Peer.CAFile}, {"certFile", c.Peer.CertFile}, {"keyFile", c.Peer.KeyFile}} {
		if f.v == "" {
			errs = append(errs, field.Required(pp.Child(f.name), "the peer path is mutually authenticated TLS"))
		}
	}
	for i, a := range c.Peer.Addresses {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || checkListenAddress(a) != nil || port == "0" {
			errs = append(errs, field.Invalid(pp.Child("addresses").Index(i), a, `must be "host:port"`))
		}
	}
	return errs
}
