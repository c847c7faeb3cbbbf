// Package relay is the relay's SMTP intake: submission on 587 (STARTTLS)
// and 465 (implicit TLS) with go-smtp, AUTH PLAIN and LOGIN over TLS only,
// sender policy per credential or trusted network, limits, DKIM signing with
// go-msgauth, and acknowledgement only once the message is durable in the
// queue. It also serves /metrics, /healthz and /readyz, reloads its
// configuration without dropping connections, and drains on shutdown.
package relay

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/config"
)

// Options configure a Server.
type Options struct {
	Config *config.Config // validated
	// ConfigPath is re-read by Reload and WatchConfig; empty disables both.
	ConfigPath string
	Queue      *queue.Queue
	Logger     *slog.Logger
	Metrics    *Metrics // nil: a fresh set
	// OnApply, if set, is called with every configuration applied after
	// start (reload), so the delivery side can follow settings such as
	// delivery.paused.
	OnApply func(*config.Config)
	// Clock is what previous passwords' notAfter is checked against; nil:
	// the real clock.
	Clock clock.PassiveClock
	// OnQueued, if set, is called for every message SMTP or the HTTP API
	// is about to commit, with its final metadata (ID and MessageID set);
	// the records it returns are committed in the same batch, so they are
	// durable exactly when the message is (the queued event). committed,
	// if not nil, is called once that batch is durable, and only then.
	OnQueued func(m *queue.Message) (recs []queue.Record, committed func())
}

// Listener names, as used in metrics.
const (
	ListenerSubmission  = "submission"  // STARTTLS
	ListenerSubmissions = "submissions" // implicit TLS
)

// Server is a running relay intake.
type Server struct {
	opts Options
	log  *slog.Logger
	q    *queue.Queue
	m    *Metrics

	policy    atomic.Pointer[policy]
	gen       atomic.Pointer[generation]
	applyMu   sync.Mutex
	tlsConfig *tls.Config

	listeners []*listener
	acceptWG  sync.WaitGroup
	conns     *connTable
	throttle  *authThrottle
	limiters  limiterSet
	passwords *passwordCache

	clock     clock.PassiveClock
	proxyNets atomic.Pointer[[]netip.Prefix]
	admitWG   sync.WaitGroup

	// shutting: listeners closed, sessions ending. terminating: SIGTERM
	// seen, readiness off but still accepting (limits.shutdownDelay).
	// draining: this member is listed in the config's drain.
	shutting    atomic.Bool
	terminating atomic.Bool
	draining    atomic.Bool
	// handedOver: a drain finished handing the queue over (MarkDrained).
	handedOver atomic.Bool
	// pendingShards: the config on disk names include files that are not
	// consistent yet; the running configuration stays.
	pendingShards atomic.Bool
	readyMu       sync.Mutex
	readyAt       time.Time
	readyErr      error
}

type listener struct {
	name        string
	ln          net.Listener
	implicitTLS bool
}

// generation is a go-smtp server built for the settings go-smtp reads on
// its own (greeting name, SIZE, timeouts). When a reload changes them a new
// generation takes new connections and the old one finishes its sessions
// undisturbed.
type generation struct {
	srv   *smtp.Server
	key   genKey
	feeds map[string]*chanListener
}

type genKey struct {
	hostname       string
	maxSize        int64
	commandTimeout time.Duration
}

// New binds the listeners and starts serving.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		q:         opts.Queue,
		m:         opts.Metrics,
		conns:     newConnTable(),
		throttle:  newAuthThrottle(),
		passwords: newPasswordCache(),
		clock:     opts.Clock,
	}
	s.tlsConfig = &tls.Config{
		// Resolved per handshake, so a reloaded certificate or minimum
		// version applies to the next connection.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.policy.Load().tls, nil
		},
		MinVersion: tls.VersionTLS12,
	}
	p, err := compile(opts.Config)
	if err != nil {
		return nil, err
	}
	s.policy.Store(p)
	s.followConfig(opts.Config)
	s.m.registerQueueDepth(s.q.Len)
	s.gen.Store(s.newGeneration(p))

	for _, l := range []struct {
		name, addr string
		tls        bool
	}{{ListenerSubmission, p.cfg.Listeners.Submission, false}, {ListenerSubmissions, p.cfg.Listeners.Submissions, true}} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("listeners.%s: %w", l.name, err)
		}
		s.listeners = append(s.listeners, &listener{name: l.name, ln: ln, implicitTLS: l.tls})
	}
	for _, l := range s.listeners {
		s.acceptWG.Add(1)
		go s.acceptLoop(l)
	}
	s.log.Info("relay: listening", "submission", s.Addr(ListenerSubmission).String(),
		"submissions", s.Addr(ListenerSubmissions).String(), "hostname", p.cfg.Hostname)
	return s, nil
}

// Config returns the configuration in effect.
func (s *Server) Config() *config.Config { return s.policy.Load().cfg }

// Addr returns the bound address of a listener.
func (s *Server) Addr(name string) net.Addr {
	for _, l := range s.listeners {
		if l.name == name {
			return l.ln.Addr()
		}
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.ln.Close()
	}
}

func keyOf(p *policy) genKey {
	return genKey{hostname: p.cfg.Hostname, maxSize: p.maxSize, commandTimeout: p.cfg.Limits.CommandTimeout.Duration}
}

func (s *Server) newGeneration(p *policy) *generation {
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = p.cfg.Hostname
	srv.MaxMessageBytes = p.maxSize
	srv.ReadTimeout = p.cfg.Limits.CommandTimeout.Duration
	srv.WriteTimeout = p.cfg.Limits.CommandTimeout.Duration
	srv.TLSConfig = s.tlsConfig
	// Recipient limits depend on the principal and are enforced in Rcpt.
	srv.MaxRecipients = 0
	// Delivery passes SMTPUTF8 on (or bounces where the next hop lacks
	// it), so internationalized addresses can be accepted.
	srv.EnableSMTPUTF8 = true
	// go-smtp would answer AUTH before TLS with a non-standard 523; the
	// session instead advertises no mechanism before TLS and answers AUTH
	// with 530 5.7.0 (RFC 3207).
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slogPrinter{s.log}
	g := &generation{srv: srv, key: keyOf(p), feeds: map[string]*chanListener{}}
	for _, name := range []string{ListenerSubmission, ListenerSubmissions} {
		cl := newChanListener()
		g.feeds[name] = cl
		go func() { _ = srv.Serve(cl) }()
	}
	return g
}

// acceptLoop admits connections within the limits and hands them to the
// current generation.
func (s *Server) acceptLoop(l *listener) {
	defer s.acceptWG.Done()
	var delay time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.shutting.Load() {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("relay: accept", "listener", l.name, "err", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		ip := addrIP(raw.RemoteAddr())
		if nets := s.proxyNets.Load(); nets != nil {
			if !containsIP(*nets, ip) {
				// Not a load balancer: a PROXY header from it closes the
				// connection (see untrustedConn).
				s.admit(l, &untrustedConn{Conn: proxyproto.NewConn(raw, proxyproto.WithPolicy(proxyproto.REJECT)), raw: raw, s: s, ip: ip}, ip)
				continue
			}
			// The header must be read before the greeting; not in this
			// loop, so a slow balancer holds up only its own connection.
			s.admitWG.Add(1)
			go func() {
				defer s.admitWG.Done()
				s.admitProxied(l, raw, ip)
			}()
			continue
		}
		s.admit(l, raw, ip)
	}
}

// admit applies the connection limits to a connection from ip and hands it
// to the current generation.
func (s *Server) admit(l *listener, raw net.Conn, ip netip.Addr) {
	tc := &trackedConn{Conn: raw, ip: ip, listener: l.name}
	p := s.policy.Load()
	if s.shutting.Load() {
		go s.refuse(tc, l.implicitTLS, p, "421 4.3.2 Service shutting down, try again later")
		return
	}
	if !s.conns.add(tc, p.cfg.Limits.MaxConnections, p.cfg.Limits.MaxConnectionsPerIP) {
		s.m.rejected.WithLabelValues("connection_limit").Inc()
		s.log.Warn("relay: connection refused: limit reached", "client", ip.String(), "listener", l.name)
		go s.refuse(tc, l.implicitTLS, p, "421 4.7.0 Too many connections, try again later")
		return
	}
	tc.onDone = func(c *trackedConn) {
		s.conns.remove(c)
		s.m.activeSessions.Dec()
	}
	s.m.sessions.WithLabelValues(l.name).Inc()
	s.m.activeSessions.Inc()
	// TLS and the SMTP byte stream are the relay's (wire.go); go-smtp
	// gets the plaintext.
	s.dispatch(l.name, s.wire(tc, l.implicitTLS))
}

// refuse answers a connection that is not admitted and closes it.
func (s *Server) refuse(c *trackedConn, implicitTLS bool, p *policy, reply string) {
	c.onDone = func(*trackedConn) {}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var w net.Conn = c
	if implicitTLS {
		tc := tls.Server(c, s.tlsConfig)
		if tc.Handshake() != nil {
			return
		}
		w = tc
	}
	fmt.Fprintf(w, "%s (%s)\r\n", reply, p.cfg.Hostname)
}

func (s *Server) dispatch(name string, c net.Conn) {
	for {
		g := s.gen.Load()
		select {
		case g.feeds[name].ch <- c:
			return
		case <-g.feeds[name].done:
			// That generation was just retired; the next Load sees the new
			// one.
		}
	}
}

// chanListener is a net.Listener fed by the accept loop.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

func addrIP(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func containsIP(nets []netip.Prefix, ip netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// followConfig takes the settings of an applied configuration that live
// in the Server rather than the policy.
func (s *Server) followConfig(cfg *config.Config) {
	if pp := cfg.ProxyProtocol; pp != nil && len(pp.TrustedCIDRs) > 0 {
		var nets []netip.Prefix
		for _, c := range pp.TrustedCIDRs {
			nets = append(nets, netip.MustParsePrefix(c).Masked())
		}
		s.proxyNets.Store(&nets)
	} else {
		s.proxyNets.Store(nil)
	}
	if d := cfg.Draining(); d != s.draining.Swap(d) && d {
		s.log.Info("relay: this member is listed in drain: readiness off", "self", cfg.Peer.Self)
	}
	s.m.configRevision.Set(float64(cfg.Revision))
}

// Apply switches to cfg without dropping connections: sessions use the new
// policy from their next command on. On error the current configuration
// stays.
func (s *Server) Apply(cfg *config.Config) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	p, err := compile(cfg)
	if err != nil {
		return err
	}
	old := s.policy.Load()
	if old.cfg.Listeners != cfg.Listeners {
		s.log.Warn("relay: listener addresses changed; they apply after a restart")
	}
	if old.cfg.Queue.Directory != cfg.Queue.Directory {
		s.log.Warn("relay: queue.directory changed; it applies after a restart")
	}
	s.policy.Store(p)
	if g := s.gen.Load(); g.key != keyOf(p) {
		s.gen.Store(s.newGeneration(p))
		s.retire(g)
	}
	keep := map[string]bool{}
	for _, u := range p.users {
		keep[u.key()] = true
	}
	for _, n := range p.networks {
		keep[n.key()] = true
	}
	s.limiters.retain(keep)
	s.followConfig(cfg)
	if s.opts.OnApply != nil {
		s.opts.OnApply(cfg)
	}
	s.log.Info("relay: configuration applied", "revision", cfg.Revision, "digest", cfg.Digest, "domains", len(cfg.Domains),
		"credentials", len(cfg.Credentials), "trusted_networks", len(cfg.TrustedNetworks))
	return nil
}

// retire stops g from taking connections; its sessions end on their own (or
// at shutdown), after which its go-smtp server is closed.
func (s *Server) retire(g *generation) {
	for _, f := range g.feeds {
		f.Close()
	}
	go func() {
		_ = g.srv.Shutdown(context.Background())
	}()
}

// Reload re-reads the config file and applies it. A bad file leaves the
// current configuration in place; the failure is logged and counted.
func (s *Server) Reload() error {
	if s.opts.ConfigPath == "" {
		return errors.New("relay: no config path to reload from")
	}
	cfg, err := config.Load(s.opts.ConfigPath)
	if errors.Is(err, config.ErrInconsistent) {
		// A projected volume mid-update, not a broken config: keep the
		// running one and look again soon (see watchConfig).
		if !s.pendingShards.Swap(true) {
			s.log.Info("relay: waiting for consistent config shards; keeping the running configuration",
				"revision", s.Config().Revision, "detail", err.Error())
		}
		s.m.reloads.WithLabelValues("inconsistent").Inc()
		return err
	}
	s.pendingShards.Store(false)
	if err == nil {
		err = s.Apply(cfg)
	}
	if err != nil {
		s.m.reloads.WithLabelValues("failure").Inc()
		s.log.Error("relay: config reload failed; keeping the previous configuration", "err", err)
		return err
	}
	s.m.reloads.WithLabelValues("success").Inc()
	s.m.lastReload.SetToCurrentTime()
	// Counts only, never names or hashes: the file holds password hashes.
	s.log.Info("relay: configuration reloaded", "domains", len(cfg.Domains), "credentials", len(cfg.Credentials), "trustedNetworks", len(cfg.TrustedNetworks))
	return nil
}

// Shutdown stops accepting, ends idle sessions, lets sessions in a mail
// transaction finish until ctx is done, then closes what is left. The queue
// is not closed: that is the caller's, after Shutdown returns.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.shutting.CompareAndSwap(false, true) {
		return errors.New("relay: already shut down")
	}
	s.log.Info("relay: shutting down", "sessions", s.conns.count())
	// Connections already in the kernel's accept queue would be reset by
	// closing the listener; accept them for a moment more and answer them
	// 421 (admit does while shutting).
	for _, l := range s.listeners {
		if tl, ok := l.ln.(*net.TCPListener); ok {
			_ = tl.SetDeadline(time.Now().Add(100 * time.Millisecond))
		}
	}
	s.acceptWG.Wait()
	s.closeListeners()
	s.admitWG.Wait()

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		// Idle sessions get 421 at their next read; busy ones finish their
		// transaction first. Repeated because go-smtp re-arms the deadline
		// before each command.
		s.conns.expireIdle()
		select {
		case <-s.conns.waitEmpty():
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			s.log.Warn("relay: shutdown deadline reached; closing remaining sessions", "sessions", s.conns.count())
			s.conns.closeAll()
			select {
			case <-s.conns.waitEmpty():
			case <-time.After(5 * time.Second):
			}
			break wait
		case <-tick.C:
		}
	}
	g := s.gen.Load()
	for _, f := range g.feeds {
		f.Close()
	}
	g.srv.Close()
	s.log.Info("relay: sessions drained")
	return err
}

// Terminate turns readiness off at once, without refusing anything: the
// first step of the shutdown sequence, before limits.shutdownDelay passes
// and Shutdown stops accepting.
func (s *Server) Terminate() {
	if !s.terminating.Swap(true) {
		s.log.Info("relay: terminating: readiness off, still accepting", "shutdownDelay", s.Config().Limits.ShutdownDelay.Duration.String())
	}
}

// MarkDrained records that a drain has handed the whole queue over with
// intake and delivery stopped: only then does /status say drained, so a
// pod is never removed while it could still take a message.
func (s *Server) MarkDrained() { s.handedOver.Store(true) }

// Status is what GET /status reports.
type Status struct {
	// Revision is the revision of the configuration applied in full.
	Revision int64 `json:"revision"`
	// ConfigDigest identifies it (config.ComputeDigest).
	ConfigDigest string `json:"configDigest"`
	Ready        bool   `json:"ready"`
	// Draining: this member is listed in drain; Drained: and it has
	// stopped taking mail and handed its whole queue over (queue empty).
	Draining bool `json:"draining"`
	Drained  bool `json:"drained"`
	Queued   int  `json:"queued"`
}

// Status returns the relay's current status.
func (s *Server) Status() Status {
	cfg := s.Config()
	st := Status{Revision: cfg.Revision, ConfigDigest: cfg.Digest, Ready: s.Ready() == nil,
		Draining: s.draining.Load(), Queued: s.q.Len()}
	st.Drained = st.Draining && s.handedOver.Load() && st.Queued == 0
	return st
}

// Handler serves /metrics, /healthz, /readyz and /status.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Status())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.m.Registry, promhttp.HandlerOpts{Registry: s.m.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		// Alive unless the queue hit an error it cannot recover from: then
		// a restart (and recovery) is the cure.
		if err := s.q.Err(); err != nil && !errors.Is(err, queue.ErrClosed) {
			http.Error(w, "queue failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
		// Quarantined mail does not stop intake, but must not go unseen.
		if n := s.q.QuarantinedLen(); n > 0 {
			fmt.Fprintf(w, "warning: %d queued messages are quarantined as unreadable (relay queue quarantine; docs/queue-recovery.md)\n", n)
		}
	})
	return mux
}

// Ready reports why the relay should not get new connections, or nil: it is
// shutting down, the spool is not writable, or the disk is nearly full.
// The write probe runs at most once a second.
func (s *Server) Ready() error {
	if s.shutting.Load() || s.terminating.Load() {
		return errors.New("shutting down")
	}
	if s.draining.Load() {
		return errors.New("draining: handing the queue to the other pool members")
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if time.Since(s.readyAt) < time.Second {
		return s.readyErr
	}
	s.readyAt = time.Now()
	s.readyErr = s.checkSpool()
	return s.readyErr
}

func (s *Server) checkSpool() error {
	if err := s.q.Probe(); err != nil {
		return fmt.Errorf("spool not writable: %w", err)
	}
	free, _, err := s.q.FreeBytes()
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if min := s.policy.Load().minFree; int64(free) < min {
		return fmt.Errorf("spool disk nearly full: %d bytes free, queue.minFreeSpace is %d", free, min)
	}
	return nil
}

// slogPrinter adapts go-smtp's logger to slog.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, v ...interface{}) {
	p.l.Warn("smtp: " + fmt.Sprintf(format, v...))
}

func (p slogPrinter) Println(v ...interface{}) { p.l.Warn("smtp: " + fmt.Sprint(v...)) }
