package delivery

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/idna"

	"mailroom.io/mailroom/internal/mtasts"
)

// Mode is how mail leaves the relay.
type Mode string

// Modes.
const (
	// Direct delivers to each recipient domain's MX hosts.
	Direct Mode = "Direct"
	// Smarthost sends everything through one upstream server.
	Smarthost Mode = "Smarthost"
)

// Timeouts are the SMTP client timeouts (RFC 5321 §4.5.3.2 gives the
// recommended minimums used as defaults).
type Timeouts struct {
	// Connect bounds the TCP connect; default 30s.
	Connect time.Duration
	// Command bounds waiting for the greeting and for the reply to each
	// command (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET); default 5m.
	Command time.Duration
	// DataBlock bounds each write of the message body; default 3m.
	DataBlock time.Duration
	// FinalDot bounds waiting for the reply after the message; default 10m.
	FinalDot time.Duration
}

func (t *Timeouts) setDefaults() {
	if t.Connect <= 0 {
		t.Connect = 30 * time.Second
	}
	if t.Command <= 0 {
		t.Command = 5 * time.Minute
	}
	if t.DataBlock <= 0 {
		t.DataBlock = 3 * time.Minute
	}
	if t.FinalDot <= 0 {
		t.FinalDot = 10 * time.Minute
	}
}

// Options configure a Deliverer.
type Options struct {
	// Hostname is the name the relay introduces itself with (EHLO).
	Hostname string
	// Mode is Direct (default) or Smarthost.
	Mode Mode
	// Smarthost is the upstream server in Smarthost mode.
	Smarthost SmarthostOptions
	// Resolver looks up MX, A/AAAA and TXT records. Required.
	Resolver *Resolver
	// MTASTS finds recipient domains' MTA-STS policies in Direct mode.
	// nil: one is made from Resolver and RootCAs.
	MTASTS *mtasts.Client
	// RootCAs verify certificates where verification is required (MTA-STS
	// enforce, smarthost); nil: the system roots.
	RootCAs *x509.CertPool
	// Port is the SMTP port of MX hosts; default 25. Tests point it at
	// loopback sinks.
	Port int
	// Timeouts are the SMTP client timeouts.
	Timeouts Timeouts
	// MaxConnectionsPerDomain limits open connections per destination;
	// default 10.
	MaxConnectionsPerDomain int
	// IdleTimeout is how long an unused connection is kept for the next
	// message to the same destination; default 5s.
	IdleTimeout time.Duration
	// MaxMessagesPerConnection closes a connection after this many
	// transactions; default 100.
	MaxMessagesPerConnection int
	// HostDownFor is how long a server that could not be reached is not
	// tried again; default 2m. Negative: not remembered.
	HostDownFor time.Duration
	// NoTLSFor is how long a server whose STARTTLS is missing or broken is
	// spoken to in cleartext without trying TLS again (opportunistic TLS
	// only); default 1h.
	NoTLSFor time.Duration
	// PreferIPv6 tries a host's IPv6 addresses before its IPv4 ones.
	PreferIPv6 bool
	// Suppressions, when set, bounces mail to suppressed recipients at
	// once and adds recipients refused as unknown users.
	Suppressions *Suppressions
	// Registerer receives the delivery metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Logger receives one record per recipient outcome and per failed
	// connection; nil: discarded.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Message is what Deliver needs of a queued message.
type Message struct {
	// ID identifies the message in logs (the queue id).
	ID string
	// From is the envelope sender; "" is the null sender.
	From string
	// Size is the message size in bytes, announced with SIZE.
	Size int64
	// EightBit says the content is not 7-bit (BODY=8BITMIME needed).
	EightBit bool
	// SMTPUTF8 says the envelope or header has UTF-8 addresses.
	SMTPUTF8 bool
	// ReceivedAt is when the relay accepted the message (for the
	// delivery latency metric).
	ReceivedAt time.Time
	// EnvelopeID and Return are the DSN parameters ENVID and RET, passed
	// on to servers that support DSN.
	EnvelopeID string
	Return     string
	// Open returns the message bytes as they are to be sent, with CRLF
	// line endings. It is called once per transaction, so it must return
	// a fresh reader each time (the queue's Open does).
	Open func() (io.ReadCloser, error)
}

// Recipient is one envelope recipient to deliver to.
type Recipient struct {
	Address string
	// Notify and OriginalRecipient are the DSN parameters NOTIFY and ORCPT
	// ("rfc822;user@example.com"), passed on to servers that support DSN.
	Notify            []string
	OriginalRecipient string
}

// Deliverer delivers messages: it routes (MX or smarthost), applies TLS
// policy, keeps connections for reuse within per-destination limits, and
// reports each recipient's outcome. It is safe for concurrent use; the
// scheduler calls Deliver from as many goroutines as it likes.
type Deliverer struct {
	opts     Options
	resolver *Resolver
	sts      *mtasts.Client
	hostDown *HostDown
	noTLS    *HostDown
	pool     *pool
	metrics  *metrics
	log      *slog.Logger
	dialer   net.Dialer

	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	quitting sync.WaitGroup // sessions saying QUIT
	mu       sync.Mutex
	closed   bool // no more QUIT goroutines
}

var errPoolClosed = errors.New("delivery: deliverer closed")

// New returns a Deliverer. Close it to close idle connections.
func New(opts Options) (*Deliverer, error) {
	if opts.Hostname == "" {
		return nil, errors.New("delivery: Hostname is required")
	}
	if opts.Resolver == nil {
		return nil, errors.New("delivery: Resolver is required")
	}
	switch opts.Mode {
	case "":
		opts.Mode = Direct
	case Direct:
	case Smarthost:
		if err := opts.Smarthost.validate(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("delivery: unknown mode %q", opts.Mode)
	}
	if opts.Port == 0 {
		opts.Port = 25
	}
	opts.Timeouts.setDefaults()
	if opts.MaxConnectionsPerDomain <= 0 {
		opts.MaxConnectionsPerDomain = 10
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Second
	}
	if opts.MaxMessagesPerConnection <= 0 {
		opts.MaxMessagesPerConnection = 100
	}
	if opts.HostDownFor == 0 {
		opts.HostDownFor = 2 * time.Minute
	}
	if opts.NoTLSFor == 0 {
		opts.NoTLSFor = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	d := &Deliverer{
		opts:     opts,
		resolver: opts.Resolver,
		sts:      opts.MTASTS,
		hostDown: NewHostDown(opts.HostDownFor, opts.Now),
		noTLS:    NewHostDown(opts.NoTLSFor, opts.Now),
		metrics:  m,
		log:      log,
		dialer:   net.Dialer{Timeout: opts.Timeouts.Connect},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if d.sts == nil && opts.Mode == Direct {
		d.sts = mtasts.New(mtasts.Options{Resolver: opts.Resolver, DialContext: d.dialViaResolver,
			RootCAs: opts.RootCAs, Now: opts.Now, Logger: log})
	}
	d.pool = newPool(opts.MaxConnectionsPerDomain, opts.IdleTimeout, opts.MaxMessagesPerConnection, opts.Now, d.closeSession)
	go d.janitor()
	return d, nil
}

// Close closes idle connections; sessions in use are closed when their
// delivery ends. Deliver must not be called afterwards.
func (d *Deliverer) Close() error {
	d.once.Do(func() {
		close(d.stop)
		<-d.done
		d.pool.close()
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.quitting.Wait()
	})
	return nil
}

// dialViaResolver dials host:port resolving host with the configured
// resolvers, so that the MTA-STS policy host is found through the same DNS
// as the MX hosts.
func (d *Deliverer) dialViaResolver(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := d.resolver.LookupIP(ctx, host, d.opts.PreferIPv6)
	if err != nil {
		return nil, err
	}
	var last error
	for _, ip := range ips {
		c, err := d.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

func (d *Deliverer) janitor() {
	defer close(d.done)
	t := time.NewTicker(max(d.opts.IdleTimeout/2, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.pool.expire()
		}
	}
}

// Destinations returns the connection state of each destination with
// connections open or deliveries waiting (for the admin interface).
func (d *Deliverer) Destinations() []DestinationStats { return d.pool.stats() }

// HostDown exposes the memory of unreachable servers (for the admin
// interface).
func (d *Deliverer) HostDown() *HostDown { return d.hostDown }

// Deliver makes one delivery attempt of msg to rcpts and returns each
// recipient's outcome, in the order of rcpts. Recipients are grouped by
// domain (in Direct mode) and the domains are attempted concurrently; all
// recipients of a domain share one transaction where the server allows.
// Deliver never returns fewer results than recipients: anything that goes
// wrong is a Deferred or Failed result with a reason.
func (d *Deliverer) Deliver(ctx context.Context, msg Message, rcpts []Recipient) []Result {
	results := make([]Result, len(rcpts))
	groups := map[string][]int{}
	var order []string
	for i, r := range rcpts {
		if res, ok := d.suppressed(r.Address); ok {
			results[i] = res
			continue
		}
		key := smarthostKey
		if d.opts.Mode == Direct {
			dom, err := recipientDomain(r.Address)
			if err != nil {
				results[i] = local(r.Address, Failed, ReasonNoRoute, "5.1.3", err.Error())
				continue
			}
			key = dom
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}

	var wg sync.WaitGroup
	for _, key := range order {
		idx := groups[key]
		wg.Go(func() {
			sub := make([]Recipient, len(idx))
			for j, i := range idx {
				sub[j] = rcpts[i]
			}
			for j, res := range d.deliverGroup(ctx, msg, key, sub) {
				results[idx[j]] = res
			}
		})
	}
	wg.Wait()

	for i := range results {
		results[i].Class = ClassOf(results[i])
		d.record(msg, rcpts[i], results[i])
	}
	return results
}

const smarthostKey = "smarthost"

// recipientDomain returns the address's domain in the A-label form DNS
// needs, lower-case.
func recipientDomain(addr string) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || at == len(addr)-1 {
		return "", fmt.Errorf("recipient %q has no domain", addr)
	}
	dom, err := idna.Lookup.ToASCII(strings.TrimSuffix(addr[at+1:], "."))
	if err != nil {
		return "", fmt.Errorf("recipient domain of %q: %v", addr, err)
	}
	return strings.ToLower(dom), nil
}

// suppressed bounces a recipient on the suppression list.
func (d *Deliverer) suppressed(addr string) (Result, bool) {
	if d.opts.Suppressions == nil {
		return Result{}, false
	}
	e, ok := d.opts.Suppressions.Hit(addr)
	if !ok {
		return Result{}, false
	}
	d.metrics.suppressed.Inc()
	detail := fmt.Sprintf("not attempted: the address is suppressed until %s because delivery to it failed permanently on %s",
		e.Expires.UTC().Format(time.RFC3339), e.Added.UTC().Format(time.RFC3339))
	if e.RemoteHost != "" {
		detail += " (" + e.RemoteHost + " said: " + strings.ReplaceAll(e.Reply, "\n", " ") + ")"
	} else if e.Reply != "" {
		detail += " (" + strings.ReplaceAll(e.Reply, "\n", " ") + ")"
	}
	return local(addr, Failed, ReasonSuppressed, "5.1.1", detail), true
}

// record logs a recipient's outcome, counts it, and adds unknown users to
// the suppression list.
func (d *Deliverer) record(msg Message, rcpt Recipient, res Result) {
	d.metrics.recipients.WithLabelValues(res.Status.String(), string(res.Reason)).Inc()
	level := slog.LevelInfo
	if res.Status != Delivered {
		level = slog.LevelWarn
	}
	d.log.Log(context.Background(), level, "delivery attempt",
		"msgID", msg.ID, "from", msg.From, "rcpt", rcpt.Address,
		"status", res.Status.String(), "reason", string(res.Reason), "code", res.Code,
		"remoteHost", res.RemoteHost, "remoteIP", res.RemoteIP, "tls", res.TLSVersion,
		"reply", res.Reply.String(), "detail", res.Detail, "duration", res.Duration)
	if res.SuppressionCandidate && d.opts.Suppressions != nil {
		if err := d.opts.Suppressions.Add(rcpt.Address, res.Reply.String(), res.RemoteHost, msg.From); err != nil {
			d.log.Error("suppression list", "rcpt", rcpt.Address, "error", err)
		}
	}
}
