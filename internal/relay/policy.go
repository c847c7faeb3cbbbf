package relay

import (
	"crypto"
	"crypto/tls"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/relay/config"
)

// policy is a config compiled for use: files loaded, lookups indexed. It is
// immutable; a reload builds a new one and swaps it in atomically, so a
// session sees either the old or the new policy, never a mix.
type policy struct {
	cfg      *config.Config
	tls      *tls.Config // built once, so session tickets work across connections
	users    map[string]*principal
	networks []*principal
	domains  map[string]bool
	keys     map[string][]signingKey // by signing domain
	maxSize  int64
	minFree  int64
}

// principal is who a message is submitted as: a credential or a trusted
// network.
type principal struct {
	kind string // "user" or "network"
	name string
	hash string // credential only
	// previous are rotated-out password hashes, each valid until its
	// notAfter (see Server.checkPassword).
	previous []config.PreviousPasswordHash
	// apiKeyHash and previousAPIKeys check the HTTP API's bearer keys the
	// same way (credential only).
	apiKeyHash      string
	previousAPIKeys []config.PreviousPasswordHash
	senders         senderSet
	limits          config.SenderLimits
	prefix          []netip.Prefix // network only
	// suspended credentials may authenticate but not send.
	suspended bool
}

func (p *principal) key() string { return p.kind + ":" + p.name }

type signingKey struct {
	selector string
	signer   crypto.Signer
}

// senderSet is a list of allowed senders: whole domains or single
// addresses.
type senderSet struct {
	domains map[string]bool
	addrs   map[string]bool
}

func newSenderSet(list []string) senderSet {
	s := senderSet{domains: map[string]bool{}, addrs: map[string]bool{}}
	for _, e := range list {
		e = strings.ToLower(e)
		if strings.Contains(e, "@") {
			s.addrs[e] = true
		} else {
			s.domains[e] = true
		}
	}
	return s
}

// allows reports whether addr (local@domain) may be used as a sender.
// Domains compare case-insensitively; local parts too, as every mailbox
// provider in practice treats them.
func (s senderSet) allows(addr string) bool {
	addr = strings.ToLower(addr)
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return false
	}
	return s.addrs[addr] || s.domains[addr[at+1:]]
}

// compile loads everything cfg refers to. Errors name the field whose file
// could not be used.
func compile(cfg *config.Config) (*policy, error) {
	p := &policy{
		cfg:     cfg,
		users:   map[string]*principal{},
		domains: map[string]bool{},
		keys:    map[string][]signingKey{},
		maxSize: cfg.Limits.MaxMessageSize.Value(),
		minFree: cfg.Queue.MinFreeSpace.Value(),
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.certFile/tls.keyFile: %w", err)
	}
	minVersion := uint16(tls.VersionTLS12)
	if cfg.TLS.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	p.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: minVersion}

	for i, d := range cfg.Domains {
		p.domains[d.Name] = true
		for j, k := range d.Keys {
			field := fmt.Sprintf("domains[%d].keys[%d].privateKeyFile", i, j)
			pem, err := os.ReadFile(k.PrivateKeyFile)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
			signer, err := dkim.ParsePrivateKey(pem)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", field, k.PrivateKeyFile, err)
			}
			alg, err := dkim.AlgorithmOf(signer)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
			if string(alg) != k.Algorithm {
				return nil, fmt.Errorf("domains[%d].keys[%d].algorithm: is %s but the key in %s is %s", i, j, k.Algorithm, k.PrivateKeyFile, alg)
			}
			p.keys[d.Name] = append(p.keys[d.Name], signingKey{selector: k.Selector, signer: signer})
		}
	}
	for _, c := range cfg.Credentials {
		p.users[c.Username] = &principal{kind: "user", name: c.Username, hash: c.PasswordHash,
			previous: c.PreviousPasswordHashes, apiKeyHash: c.APIKeyHash, previousAPIKeys: c.PreviousAPIKeyHashes,
			senders: newSenderSet(c.AllowedSenders), limits: c.Limits, suspended: c.Suspended}
	}
	for _, n := range cfg.TrustedNetworks {
		pr := &principal{kind: "network", name: n.Name, senders: newSenderSet(n.AllowedSenders), limits: n.Limits}
		for _, c := range n.CIDRs {
			pr.prefix = append(pr.prefix, netip.MustParsePrefix(c).Masked())
		}
		p.networks = append(p.networks, pr)
	}
	return p, nil
}

// network returns the trusted network ip belongs to, if any.
func (p *policy) network(ip netip.Addr) *principal {
	ip = ip.Unmap()
	for _, n := range p.networks {
		for _, pfx := range n.prefix {
			if pfx.Contains(ip) {
				return n
			}
		}
	}
	return nil
}

// signingKeys returns the signing domain and keys for a From: domain.
func (p *policy) signingKeys(fromDomain string) (string, []signingKey) {
	d := config.SigningDomain(strings.ToLower(fromDomain), p.domains)
	return d, p.keys[d]
}

// maxRecipients is the recipient limit for pr: the server's, or the
// principal's if that is lower.
func (p *policy) maxRecipients(pr *principal) int {
	n := p.cfg.Limits.MaxRecipients
	if r := pr.limits.RecipientsPerMessage; r > 0 && r < n {
		n = r
	}
	return n
}
