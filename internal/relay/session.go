package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/queue"
	"mailroom.io/mailroom/internal/relay/password"
	"mailroom.io/mailroom/internal/relay/saslogin"
)

func smtpErr(code int, enh smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}
}

var (
	errTLSRequired = smtpErr(530, smtp.EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first")
	errAuthNeeded  = smtpErr(530, smtp.EnhancedCode{5, 7, 0}, "Authentication required")
	errThrottled   = smtpErr(454, smtp.EnhancedCode{4, 7, 0}, "Too many failed authentication attempts from your address; try again later")
	errNoSpace     = smtpErr(452, smtp.EnhancedCode{4, 3, 1}, "Insufficient system storage; try again later")
	errLocal       = smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "Local error in processing; try again later")
	errShutdown    = smtpErr(421, smtp.EnhancedCode{4, 3, 2}, "Service shutting down; try again later")
)

// session is one SMTP connection's state. go-smtp creates a new one after
// STARTTLS, so nothing learnt before TLS (including AUTH) carries over.
type session struct {
	s  *Server
	c  *smtp.Conn
	tc *trackedConn
	ip netip.Addr
	// user is the authenticated username. It and the transaction are
	// guarded by mu: with BDAT, go-smtp runs Data in its own goroutine and
	// may call Reset (or Auth) concurrently.
	mu    sync.Mutex
	user  string
	log   atomic.Pointer[slog.Logger]
	pr    *principal
	from  string
	mopts smtp.MailOptions
	rcpts []queue.Recipient
	// authHeld: an AUTH attempt's reservation in the throttle is held.
	authHeld atomic.Bool
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	tc := unwrapTracked(c.Conn())
	if tc == nil {
		return nil, errors.New("relay: untracked connection")
	}
	ss := &session{s: s, c: c, tc: tc, ip: tc.ip}
	ss.log.Store(s.log.With("client", tc.ip.String(), "listener", tc.listener))
	return ss, nil
}

// logger is read from Data's goroutine too (see mu), hence atomic; it must
// not take mu, which Rcpt holds while rejecting.
func (ss *session) logger() *slog.Logger { return ss.log.Load() }

func (ss *session) isTLS() bool {
	_, ok := ss.tlsState()
	return ok
}

// tlsState is the session's TLS, which the relay's wireConn (not go-smtp)
// terminates.
func (ss *session) tlsState() (tls.ConnectionState, bool) {
	if w := unwrapWire(ss.c.Conn()); w != nil {
		if w.tls == nil {
			return tls.ConnectionState{}, false
		}
		return w.tls.ConnectionState(), true
	}
	return ss.c.TLSConnectionState()
}

// reject counts and logs a refusal and returns the reply for it. Past
// rejectLogBurst refusals on a connection, they are only counted, and
// summarized when the session ends.
func (ss *session) reject(reason string, e *smtp.SMTPError, attrs ...any) error {
	ss.s.m.rejected.WithLabelValues(reason).Inc()
	if !ss.tc.rejects.individually() {
		ss.tc.rejects.suppressed(reason)
		return e
	}
	ss.logger().Info("relay: rejected", append([]any{"reason", reason, "code", e.Code}, attrs...)...)
	return e
}

// AuthMechanisms offers PLAIN and LOGIN, and only over TLS.
func (ss *session) AuthMechanisms() []string {
	if !ss.isTLS() {
		return nil
	}
	return []string{sasl.Plain, saslogin.Mechanism}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if !ss.isTLS() {
		ss.s.m.authFailures.WithLabelValues("no_tls").Inc()
		return nil, ss.reject("auth_without_tls", errTLSRequired)
	}
	ss.mu.Lock()
	inTransaction := ss.pr != nil
	ss.mu.Unlock()
	if inTransaction {
		// RFC 4954 §4.
		return nil, smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "Bad sequence of commands: AUTH inside a mail transaction")
	}
	switch mech {
	case sasl.Plain, saslogin.Mechanism:
	default:
		return nil, smtp.ErrAuthUnknownMechanism
	}
	// The reservation is taken before any credential is read and counted
	// as a failure where the check fails (authFailed).
	ss.releaseAuth(false)
	lim := ss.s.policy.Load().cfg.Limits
	if !ss.s.throttle.begin(ss.ip, lim.AuthFailures, lim.AuthFailureWindow.Duration, authWait(lim.CommandTimeout.Duration)) {
		ss.s.m.authFailures.WithLabelValues("throttled").Inc()
		return nil, ss.reject("auth_throttled", errThrottled)
	}
	ss.authHeld.Store(true)
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, pw string) error {
			if identity != "" && identity != username {
				// Acting as another user is not offered.
				return ss.authFailed(username, "authorization identity differs")
			}
			return ss.authenticate(username, pw)
		}), nil
	case saslogin.Mechanism:
		return saslogin.NewServer(ss.authenticate), nil
	default:
		return nil, smtp.ErrAuthUnknownMechanism
	}
}

func (ss *session) authenticate(username, pw string) error {
	if !ss.s.checkPassword(ss.s.policy.Load().users[username], username, pw) {
		return ss.authFailed(username, "bad credentials")
	}
	ss.releaseAuth(false)
	ss.mu.Lock()
	ss.user = username
	ss.mu.Unlock()
	ss.log.Store(ss.logger().With("user", username))
	ss.logger().Info("relay: authenticated")
	return nil
}

// releaseAuth ends the session's AUTH attempt in the throttle, if one is
// held. An attempt that ends without a check (cancelled, undecodable, the
// client left) is not a failure.
func (ss *session) releaseAuth(failed bool) {
	if ss.authHeld.CompareAndSwap(true, false) {
		ss.s.throttle.end(ss.ip, failed, ss.s.policy.Load().cfg.Limits.AuthFailureWindow.Duration)
	}
}

// authWait bounds how long an AUTH waits for its turn in the throttle.
func authWait(commandTimeout time.Duration) time.Duration {
	return min(30*time.Second, max(commandTimeout, time.Second))
}

func (ss *session) authFailed(username, why string) error {
	ss.releaseAuth(true)
	ss.s.m.authFailures.WithLabelValues("bad_credentials").Inc()
	// The username is logged to find misconfigured apps; the password never.
	ss.logger().Warn("relay: authentication failed", "attempted_user", username, "why", why)
	return smtp.ErrAuthFailed
}

// principal resolves who is submitting: the authenticated credential, else
// a trusted network the client is in.
func (ss *session) principal(p *policy) (*principal, error) {
	if ss.user != "" {
		pr := p.users[ss.user]
		if pr == nil {
			return nil, ss.reject("credential_removed", smtpErr(530, smtp.EnhancedCode{5, 7, 0},
				"Authentication required: this credential is no longer valid"))
		}
		return pr, nil
	}
	if n := p.network(ss.ip); n != nil {
		return n, nil
	}
	return nil, ss.reject("auth_required", errAuthNeeded)
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) (err error) {
	ss.tc.busy.Store(true)
	defer func() {
		if err != nil {
			ss.tc.busy.Store(false)
		}
	}()
	if ss.s.shutting.Load() {
		return errShutdown
	}
	p := ss.s.policy.Load()
	pr, err := ss.principal(p)
	if err != nil {
		return err
	}
	from, ref := ss.s.checkMail(p, pr, from, opts.UTF8, opts.Size)
	if ref != nil {
		return ss.refused(ref)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.pr, ss.from, ss.mopts, ss.rcpts = pr, from, *opts, nil
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.pr == nil {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL first")
	}
	to, ref := ss.s.checkRcpt(ss.s.policy.Load(), ss.pr, to, ss.mopts.UTF8, len(ss.rcpts))
	if ref != nil {
		return ss.refused(ref)
	}
	r := queue.Recipient{Address: to, OriginalRecipient: opts.OriginalRecipient}
	for _, n := range opts.Notify {
		r.Notify = append(r.Notify, string(n))
	}
	ss.rcpts = append(ss.rcpts, r)
	return nil
}

func (ss *session) Reset() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.pr, ss.from, ss.rcpts = nil, "", nil
	ss.tc.busy.Store(false)
}

func (ss *session) Logout() error {
	ss.releaseAuth(false)
	ss.tc.rejects.flush(ss.logger())
	return nil
}

// Data streams the message through policy checks and DKIM signers into the
// queue and acknowledges it only once it is durable.
func (ss *session) Data(r io.Reader) error {
	ss.mu.Lock()
	pr, from, mopts, rcpts, user := ss.pr, ss.from, ss.mopts, ss.rcpts, ss.user
	ss.mu.Unlock()
	defer ss.tc.busy.Store(false)
	if pr == nil || len(rcpts) == 0 {
		return smtpErr(503, smtp.EnhancedCode{5, 5, 1}, "MAIL and RCPT first")
	}
	_, isTLS := ss.tlsState()
	sub := submission{pr: pr, from: from, rcpts: rcpts, utf8: mopts.UTF8, body8bit: mopts.Body == smtp.Body8BitMIME,
		envid: mopts.EnvelopeID, ret: string(mopts.Return), helo: ss.c.Hostname(), clientIP: ss.ip.String(),
		tls: isTLS, auth: user != "", conn: ss.c.Conn()}
	if w := unwrapWire(sub.conn); w != nil {
		if c := w.content.Load(); c != nil {
			// DATA (not BDAT): the wire layer has the content, framed
			// correctly and without go-smtp's octet-by-octet reader.
			r = c
		}
	}
	acc, ref := ss.s.submit(ss.s.policy.Load(), sub, r, ss.logAt)
	if ref != nil {
		return ss.refused(ref)
	}
	return smtpErr(250, smtp.EnhancedCode{2, 0, 0}, "OK: queued as "+acc.ID)
}

// refused counts and logs a refusal from the submission core and returns
// its reply; one without a reason (the client went away) is only logged.
func (ss *session) refused(ref *Refusal) error {
	if ref.Reason == "" {
		ss.logger().Info("relay: DATA aborted", ref.attrs...)
		return ref.Reply
	}
	return ss.reject(ref.Reason, ref.Reply, ref.attrs...)
}

func (ss *session) logAt(level, msg string, attrs ...any) {
	if level == "error" {
		ss.logger().Error(msg, attrs...)
		return
	}
	ss.logger().Info(msg, attrs...)
}

// passwordCache remembers the last password that verified for each user as
// an HMAC under a per-process key, so a client that opens many sessions
// costs one bcrypt, not one per session. An entry only matches while the
// configured hash is unchanged.
type passwordCache struct {
	key   [32]byte
	mu    sync.Mutex
	m     map[string]cachedPassword
	dummy func() string
}

type cachedPassword struct {
	hash string
	mac  []byte
}

func newPasswordCache() *passwordCache {
	c := &passwordCache{m: map[string]cachedPassword{}}
	_, _ = rand.Read(c.key[:])
	c.dummy = sync.OnceValue(func() string {
		var b [16]byte
		_, _ = rand.Read(b[:])
		h, _ := password.Hash(fmt.Sprintf("%x", b))
		return h
	})
	return c
}

func (c *passwordCache) mac(user, pw string) []byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pw))
	return m.Sum(nil)
}

// verify checks pw against hash; an unknown user (hash "") still costs a
// hash comparison so response times do not reveal which users exist.
func (c *passwordCache) verify(user, hash, pw string) bool {
	if hash == "" {
		_ = password.Verify(c.dummy(), pw)
		return false
	}
	mac := c.mac(user, pw)
	c.mu.Lock()
	e, ok := c.m[user]
	c.mu.Unlock()
	if ok && e.hash == hash && hmac.Equal(e.mac, mac) {
		return true
	}
	if password.Verify(hash, pw) != nil {
		return false
	}
	c.mu.Lock()
	c.m[user] = cachedPassword{hash: hash, mac: mac}
	c.mu.Unlock()
	return true
}
