package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// TXTResolver looks up TXT records. A name without TXT records (NXDOMAIN
// or NODATA) is (nil, nil); an error means the answer is not known now
// (SERVFAIL, timeout).
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Options configure a Client. Resolver is required.
type Options struct {
	Resolver TXTResolver
	// DialContext dials the policy host ("mta-sts.<domain>:443"); nil:
	// a net.Dialer. Tests point it at a loopback HTTPS server.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs verify the policy host's certificate; nil: the system roots.
	RootCAs *x509.CertPool
	// FetchTimeout bounds one policy fetch; default 1 minute (RFC 8461
	// §3.3 suggests no more).
	FetchTimeout time.Duration
	// FailureBackoff is how long a failed fetch is not retried for the
	// same record id, so that a burst of mail to a domain with a broken
	// policy server does not fetch once per message; default 5 minutes.
	FailureBackoff time.Duration
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// MaxPolicySize is the largest policy body accepted (RFC 8461 §3.3).
const MaxPolicySize = 64 << 10

type cached struct {
	policy  *Policy
	expires time.Time
}

type failure struct {
	id    string
	until time.Time
	err   error
}

// Client finds and caches domains' policies. It is safe for concurrent
// use.
type Client struct {
	opts   Options
	http   *http.Client
	flight singleflight.Group

	mu       sync.Mutex
	cache    map[string]cached
	failures map[string]failure
}

// New returns a Client.
func New(opts Options) *Client {
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = time.Minute
	}
	if opts.FailureBackoff <= 0 {
		opts.FailureBackoff = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second}).DialContext
	}
	transport := &http.Transport{
		// No proxy from the environment: the policy must come from the
		// domain's own host, over a connection we make.
		Proxy:               nil,
		DialContext:         dial,
		TLSClientConfig:     &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 30 * time.Second,
		DisableKeepAlives:   true,
		ForceAttemptHTTP2:   false,
	}
	return &Client{
		opts: opts,
		http: &http.Client{
			Transport: transport,
			Timeout:   opts.FetchTimeout,
			// RFC 8461 §3.3: redirects must not be followed.
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errors.New("mtasts: policy host redirected; redirects are not followed")
			},
		},
		cache:    map[string]cached{},
		failures: map[string]failure{},
	}
}

// Get returns the policy that applies to mail for domain now, or nil when
// the domain has none. err, when set, says why a current policy could not
// be obtained (DNS trouble, fetch failure, bad syntax); the policy
// returned with it, if any, is the cached one that keeps applying. An
// error never means that delivery must stop.
func (c *Client) Get(ctx context.Context, domain string) (*Policy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	v, err, _ := c.flight.Do(domain, func() (any, error) {
		return c.get(ctx, domain)
	})
	p, _ := v.(*Policy)
	return p, err
}

func (c *Client) get(ctx context.Context, domain string) (*Policy, error) {
	now := c.opts.Now()
	c.mu.Lock()
	prev, ok := c.cache[domain]
	if ok && !now.Before(prev.expires) {
		delete(c.cache, domain)
		ok = false
	}
	c.mu.Unlock()
	var current *Policy
	if ok {
		current = prev.policy
	}

	id, err := c.lookupRecord(ctx, domain)
	if err != nil {
		return current, err
	}
	if id == "" {
		// No record: the cached policy still applies until it expires
		// (RFC 8461 §5.1); a domain that withdraws MTA-STS publishes
		// mode "none" first.
		return current, nil
	}
	if current != nil && current.ID == id {
		return current, nil
	}

	c.mu.Lock()
	f, failed := c.failures[domain]
	c.mu.Unlock()
	if failed && f.id == id && now.Before(f.until) {
		return current, f.err
	}

	p, err := c.fetch(ctx, domain)
	if err != nil {
		c.mu.Lock()
		c.failures[domain] = failure{id: id, until: now.Add(c.opts.FailureBackoff), err: err}
		c.mu.Unlock()
		c.opts.Logger.Warn("MTA-STS policy fetch failed", "domain", domain, "id", id, "error", err, "cachedPolicy", current != nil)
		return current, err
	}
	p.ID = id
	c.mu.Lock()
	delete(c.failures, domain)
	c.cache[domain] = cached{policy: p, expires: now.Add(p.MaxAge)}
	c.mu.Unlock()
	c.opts.Logger.Info("MTA-STS policy fetched", "domain", domain, "id", id, "mode", p.Mode, "mx", p.MX, "maxAge", p.MaxAge)
	return p, nil
}

// lookupRecord returns the id of the domain's MTA-STS record, or "" when
// there is no usable record.
func (c *Client) lookupRecord(ctx context.Context, domain string) (string, error) {
	txts, err := c.opts.Resolver.LookupTXT(ctx, "_mta-sts."+domain+".")
	if err != nil {
		return "", fmt.Errorf("mtasts: TXT _mta-sts.%s: %w", domain, err)
	}
	var ids []string
	var bad error
	for _, txt := range txts {
		id, err := ParseRecord(txt)
		switch {
		case errors.Is(err, ErrNotSTS):
		case err != nil:
			bad = err
		default:
			ids = append(ids, id)
		}
	}
	switch {
	case bad != nil:
		// RFC 8461 §3.1: an invalid record means no policy.
		return "", bad
	case len(ids) != 1:
		// None, or more than one: no policy.
		return "", nil
	}
	return ids[0], nil
}

func (c *Client) fetch(ctx context.Context, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mtasts: fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mtasts: fetch %s: HTTP %s, want 200", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("mtasts: fetch %s: %w", url, err)
	}
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("mtasts: policy at %s is larger than %d bytes", url, MaxPolicySize)
	}
	return ParsePolicy(string(body))
}
