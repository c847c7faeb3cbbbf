package relay

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"mailroom.io/mailroom/internal/apikey"
	"mailroom.io/mailroom/internal/queue"
)

// This file is the submission core that SMTP (session.go) and the HTTP API
// (package httpapi) share, so that their policy, signing and durability
// cannot drift: the checks MAIL and RCPT make (checkMail, checkRcpt), and
// what DATA does with the message (submit).

// Refusal is why a submission step was refused: the SMTP reply, and the
// reason it is counted under (mailroom_relay_rejected_total). Reason ""
// marks a failure that is not the client's message's fault (it went away).
type Refusal struct {
	Reason string
	Reply  *smtp.SMTPError
	attrs  []any
}

func (r *Refusal) Error() string { return r.Reply.Error() }

func refuse(reason string, reply *smtp.SMTPError, attrs ...any) *Refusal {
	return &Refusal{Reason: reason, Reply: reply, attrs: attrs}
}

// httpStatus is the one table from refusal reasons to the HTTP API's
// status codes; the reply text and codes come with the Refusal, so HTTP
// and SMTP say the same. Reasons not listed map by the SMTP code's class.
var httpStatus = map[string]int{
	"auth_required":             http.StatusUnauthorized,
	"credential_removed":        http.StatusUnauthorized,
	"bad_credentials":           http.StatusUnauthorized,
	"auth_throttled":            http.StatusTooManyRequests,
	"rate_limited":              http.StatusTooManyRequests,
	"suspended":                 http.StatusForbidden,
	"sender_not_allowed":        http.StatusForbidden,
	"from_header_not_allowed":   http.StatusForbidden,
	"sender_header_not_allowed": http.StatusForbidden,
	"bad_sender":                http.StatusUnprocessableEntity,
	"bad_recipient":             http.StatusUnprocessableEntity,
	"too_many_recipients":       http.StatusUnprocessableEntity,
	"bad_from_header":           http.StatusUnprocessableEntity,
	"bad_sender_header":         http.StatusUnprocessableEntity,
	"malformed":                 http.StatusUnprocessableEntity,
	"bare_line_ending":          http.StatusUnprocessableEntity,
	"line_too_long":             http.StatusUnprocessableEntity,
	"message_too_large":         http.StatusRequestEntityTooLarge,
	"no_space":                  http.StatusInsufficientStorage,
	"shutting_down":             http.StatusServiceUnavailable,
	"no_signing_key":            http.StatusServiceUnavailable,
	"signing_error":             http.StatusInternalServerError,
	"queue_error":               http.StatusInternalServerError,
}

// HTTPStatus is the HTTP API's status for the refusal.
func (r *Refusal) HTTPStatus() int {
	if c, ok := httpStatus[r.Reason]; ok {
		return c
	}
	if r.Reply.Code >= 500 {
		return http.StatusUnprocessableEntity
	}
	return http.StatusServiceUnavailable
}

// Refusals of the API's own (no SMTP command has them), with SMTP-style
// codes for the problem document.
var (
	errBadCredentials = smtpErr(535, smtp.EnhancedCode{5, 7, 8}, "Authentication credentials invalid")
)

// Principal is who an HTTP API request submits as: an authenticated
// credential.
type Principal struct{ pr *principal }

// Name is the credential's username.
func (p Principal) Name() string { return p.pr.name }

// Key is the principal as recorded in queue.Message.Origin ("user:<name>").
func (p Principal) Key() string { return p.pr.key() }

// AllowsSender reports whether addr is one of the principal's allowed
// senders.
func (p Principal) AllowsSender(addr string) bool { return p.pr.senders.allows(addr) }

// SenderDomains are the domains of the principal's allowed senders (whole
// domains and the domains of single addresses).
func (p Principal) SenderDomains() []string {
	var out []string
	for d := range p.pr.senders.domains {
		out = append(out, d)
	}
	for a := range p.pr.senders.addrs {
		out = append(out, domainOf(a))
	}
	return out
}

// AuthenticatePassword checks an HTTP Basic username and password exactly
// as SMTP AUTH does: the same hashes and password cache, and the same
// per-address failure throttle.
func (s *Server) AuthenticatePassword(ip netip.Addr, user, pw string) (Principal, *Refusal) {
	return s.authenticateWith(ip, user, func(pr *principal) bool { return s.checkPassword(pr, user, pw) })
}

// AuthenticateAPIKey checks a bearer API key (package apikey's format)
// against the named credential's apiKeyHash and previousAPIKeyHashes,
// through the same password cache and failure throttle as passwords.
func (s *Server) AuthenticateAPIKey(ip netip.Addr, key string) (Principal, *Refusal) {
	user, _ := apikey.User(key)
	return s.authenticateWith(ip, user, func(pr *principal) bool { return s.checkAPIKey(pr, user, key) })
}

func (s *Server) authenticateWith(ip netip.Addr, user string, check func(*principal) bool) (Principal, *Refusal) {
	lim := s.policy.Load().cfg.Limits
	if !s.throttle.begin(ip, lim.AuthFailures, lim.AuthFailureWindow.Duration, authWait(lim.CommandTimeout.Duration)) {
		s.m.authFailures.WithLabelValues("throttled").Inc()
		return Principal{}, refuse("auth_throttled", errThrottled)
	}
	pr := s.policy.Load().users[user]
	ok := check(pr)
	s.throttle.end(ip, !ok, lim.AuthFailureWindow.Duration)
	if !ok {
		s.m.authFailures.WithLabelValues("bad_credentials").Inc()
		// The username is logged to find misconfigured apps; the secret never.
		s.log.Warn("relay: API authentication failed", "client", ip.String(), "attempted_user", user)
		return Principal{}, refuse("bad_credentials", errBadCredentials)
	}
	return Principal{pr: pr}, nil
}

// checkAPIKey is checkPassword for API keys: the whole key is hashed
// (password.HashToken) in apiKeyHash.
func (s *Server) checkAPIKey(pr *principal, user, key string) bool {
	if pr == nil || pr.apiKeyHash == "" && len(pr.previousAPIKeys) == 0 {
		// Same cost as a wrong key, so timing does not tell users apart.
		return s.checkPassword(nil, user, key)
	}
	// The cache is keyed by user; a distinct name keeps the password's
	// and the key's entries apart.
	cacheUser := "\x00apikey\x00" + user
	if pr.apiKeyHash != "" && s.passwords.verify(cacheUser, pr.apiKeyHash, key) {
		return true
	}
	now := s.clock.Now()
	for _, p := range pr.previousAPIKeys {
		if now.Before(p.NotAfter.Time) && s.passwords.verify(cacheUser, p.Hash, key) {
			return true
		}
	}
	return false
}

// checkMail is MAIL FROM's policy for principal pr: not suspended, a
// valid non-null sender it may use, room in the spool for size bytes,
// and a message left in its rate limits (one is taken). It returns the
// canonical sender.
func (s *Server) checkMail(p *policy, pr *principal, from string, utf8 bool, size int64) (string, *Refusal) {
	if pr.suspended {
		return "", refuse("suspended", smtpErr(451, smtp.EnhancedCode{4, 7, 1},
			fmt.Sprintf("Credential %s is suspended; try again later", pr.name)))
	}
	if from == "" {
		return "", refuse("sender_not_allowed", smtpErr(550, smtp.EnhancedCode{5, 7, 1},
			"The null sender <> is not accepted for submission"))
	}
	// A sender accepted here must be able to get a DSN later.
	canon, aerr := envelopeAddress(from, utf8)
	if aerr != nil {
		return "", refuse("bad_sender", aerr.reply(true, from))
	}
	if !pr.senders.allows(canon) {
		return "", refuse("sender_not_allowed", smtpErr(550, smtp.EnhancedCode{5, 7, 1},
			fmt.Sprintf("Sender address <%s> is not allowed for %s %s", canon, pr.kind, pr.name)), "from", canon)
	}
	if free, _, ferr := s.q.FreeBytes(); ferr == nil && int64(free) < p.minFree+size {
		return "", refuse("no_space", errNoSpace)
	}
	if ok, which := s.limiters.get(pr.key(), pr.limits).allow(); !ok {
		return "", refuse("rate_limited", smtpErr(451, smtp.EnhancedCode{4, 7, 1},
			fmt.Sprintf("Rate limit %s exceeded for %s %s; try again later", which, pr.kind, pr.name)))
	}
	return canon, nil
}

// checkRcpt is RCPT TO's policy: a valid address, and fewer than the
// recipient limit already given (have). It returns the canonical address.
func (s *Server) checkRcpt(p *policy, pr *principal, to string, utf8 bool, have int) (string, *Refusal) {
	canon, aerr := envelopeAddress(to, utf8)
	if aerr != nil {
		return "", refuse("bad_recipient", aerr.reply(false, to))
	}
	if limit := p.maxRecipients(pr); have >= limit {
		return "", refuse("too_many_recipients", smtpErr(452, smtp.EnhancedCode{4, 5, 3},
			fmt.Sprintf("Too many recipients: at most %d per message", limit)))
	}
	return canon, nil
}

// submission is a message's envelope and how it arrived.
type submission struct {
	pr    *principal
	from  string
	rcpts []queue.Recipient
	// utf8, body8bit, envid, ret: the MAIL parameters SMTPUTF8,
	// BODY=8BITMIME, ENVID and RET.
	utf8, body8bit bool
	envid, ret     string
	// For the Received: field.
	helo, clientIP string
	tls, auth      bool
	// via names the API in the Received: field ("HTTPS"), "" for SMTP.
	via string
	// conn, when set, gets a read deadline of limits.dataTimeout per block.
	conn     net.Conn
	tags     []string
	metadata map[string]string
	// also returns records to commit in the same batch as the message,
	// given its queue id and Message-ID (the API's idempotency answer).
	also func(id, messageID string) []queue.Record
}

// Accepted is a message the queue holds durably.
type Accepted struct {
	ID        string // queue id
	MessageID string // Message-ID header field value, without <>
	Size      int64
}

// submit streams a message through the header checks and DKIM signers
// into the queue, adding Received:, and Date: and Message-ID: where they
// are missing, and returns only once it is durable. The refusal's reason
// is "" for failures that are the connection's (see Refusal).
func (s *Server) submit(p *policy, sub submission, r io.Reader, log logFunc) (Accepted, *Refusal) {
	pr := sub.pr
	guard := &dataGuard{r: r, conn: sub.conn, timeout: p.cfg.Limits.DataTimeout.Duration, max: p.maxSize}
	if sub.conn == nil {
		guard.timeout = 0
	}
	br := bufio.NewReaderSize(guard, 32<<10)

	h, err := readHeader(br)
	if err != nil {
		return Accepted{}, dataRefusal(err)
	}
	froms, err := h.fromAddresses()
	if err != nil {
		return Accepted{}, refuse("bad_from_header", smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "Message refused: "+err.Error()))
	}
	for _, f := range froms {
		if !pr.senders.allows(f) {
			return Accepted{}, refuse("from_header_not_allowed", smtpErr(550, smtp.EnhancedCode{5, 7, 1},
				fmt.Sprintf("From: header address <%s> is not allowed for %s %s", f, pr.kind, pr.name)), "header_from", f)
		}
	}
	// Sender: names who sent the message (RFC 5322 §3.6.2), so it is held
	// to the same allowed senders as From: (RFC 6409 §8).
	sender, err := h.senderAddress()
	if err != nil {
		return Accepted{}, refuse("bad_sender_header", smtpErr(550, smtp.EnhancedCode{5, 6, 0}, "Message refused: "+err.Error()))
	}
	if sender != "" && !pr.senders.allows(sender) {
		return Accepted{}, refuse("sender_header_not_allowed", smtpErr(550, smtp.EnhancedCode{5, 7, 1},
			fmt.Sprintf("Sender: header address <%s> is not allowed for %s %s", sender, pr.kind, pr.name)), "header_sender", sender)
	}
	domain, keys := p.signingKeys(domainOf(froms[0]))
	if len(keys) == 0 {
		// Config validation keeps allowed senders under signing domains, so
		// this only happens if that invariant breaks; refuse rather than
		// send unsigned.
		return Accepted{}, refuse("no_signing_key", smtpErr(451, smtp.EnhancedCode{4, 7, 0},
			"No DKIM key for the From: domain; try again later"))
	}

	w, err := s.q.NewWriter()
	if err != nil {
		return Accepted{}, queueRefusal(err, log)
	}
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	qid := w.ID()
	now := time.Now()

	// RFC 6409 §8: a submission server may add a missing Date and
	// Message-ID. They go at the end of the header section; Received goes
	// on top as trace fields do.
	var added []string
	if !h.has("Date") {
		added = append(added, "Date: "+now.Format(time.RFC1123Z)+"\r\n")
	}
	msgID := strings.TrimSpace(h.fields.Get("Message-Id"))
	if msgID == "" {
		msgID = fmt.Sprintf("<%s.%d@%s>", qid, now.UnixNano(), p.cfg.Hostname)
		added = append(added, "Message-ID: "+msgID+"\r\n")
	}
	msgID = strings.TrimSuffix(strings.TrimPrefix(msgID, "<"), ">")
	signers, err := newSigners(domain, keys, headerKeys(h, added))
	if err != nil {
		log("error", "relay: DKIM signer", "err", err, "domain", domain)
		return Accepted{}, refuse("signing_error", errLocal)
	}
	defer func() {
		if !committed {
			signers.abort()
		}
	}()
	eight := &eightBitDetector{}
	// Buffered, so the signers (each a pipe to its own goroutine) and the
	// spool writer get a few large writes instead of one per header field.
	out := outBuffers.Get().(*bufio.Writer)
	out.Reset(io.MultiWriter(append([]io.Writer{w, eight}, signers.writers()...)...))
	defer func() {
		out.Reset(nil)
		outBuffers.Put(out)
	}()
	trace := receivedField(sub.helo, sub.clientIP, p.cfg.Hostname, sub.tls, sub.auth, sub.utf8, qid, now)
	if sub.via != "" {
		trace = receivedVia(sub.via, sub.clientIP, p.cfg.Hostname, qid, now)
	}
	if _, err := io.WriteString(out, trace); err != nil {
		return Accepted{}, dataRefusal(err)
	}
	if _, err := out.Write(h.raw); err != nil {
		return Accepted{}, dataRefusal(err)
	}
	for _, f := range added {
		if _, err := io.WriteString(out, f); err != nil {
			return Accepted{}, dataRefusal(err)
		}
	}
	if _, err := io.WriteString(out, "\r\n"); err != nil {
		return Accepted{}, dataRefusal(err)
	}
	if _, err := io.Copy(out, br); err != nil {
		return Accepted{}, dataRefusal(err)
	}
	if err := out.Flush(); err != nil {
		return Accepted{}, dataRefusal(err)
	}
	sigs, err := signers.finish()
	if err != nil {
		log("error", "relay: DKIM signing failed", "err", err, "domain", domain, "queue_id", qid)
		return Accepted{}, refuse("signing_error", errLocal)
	}
	dataEnd := time.Now()
	m := queue.Message{ID: qid, From: sub.from, Recipients: sub.rcpts, ReceivedAt: now.UTC(), Origin: pr.key(), Header: sigs,
		Size: w.Size() + int64(len(sigs)), EnvelopeID: sub.envid, Return: sub.ret,
		// Clients often send 8-bit data without BODY=8BITMIME; delivery
		// must still announce it, so the content decides too.
		EightBit: sub.body8bit || eight.seen,
		SMTPUTF8: sub.utf8, MessageID: msgID, Tags: sub.tags, Metadata: sub.metadata}
	var also []queue.Record
	if sub.also != nil {
		also = append(also, sub.also(qid, msgID)...)
	}
	var onCommit func()
	if s.opts.OnQueued != nil {
		var recs []queue.Record
		recs, onCommit = s.opts.OnQueued(&m)
		also = append(also, recs...)
	}
	err = w.Commit(m, also...)
	committed = true // Commit cleans up after itself when it fails
	if err != nil {
		return Accepted{}, queueRefusal(err, log)
	}
	if onCommit != nil {
		onCommit()
	}
	s.m.accepted.Inc()
	s.m.acceptedBytes.Add(float64(m.Size))
	s.m.acceptLatency.Observe(time.Since(dataEnd).Seconds())
	log("info", "relay: accepted", "queue_id", qid, "origin", pr.key(), "from", sub.from, "header_from", froms[0],
		"recipients", len(sub.rcpts), "size", m.Size, "dkim_domain", domain, "tls", sub.tls)
	return Accepted{ID: qid, MessageID: msgID, Size: m.Size}, nil
}

// outBuffers are the 32 KiB write buffers of submissions in progress.
var outBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// logFunc logs at a level ("info", "error") with the caller's context.
type logFunc func(level, msg string, attrs ...any)

// receivedVia is the Received: field of an HTTP API submission.
func receivedVia(via, ip, hostname, queueID string, now time.Time) string {
	return fmt.Sprintf("Received: from [%s]\r\n\tby %s (mailroom) via %s id %s;\r\n\t%s\r\n",
		ip, hostname, via, queueID, now.Format(time.RFC1123Z))
}

// dataRefusal turns a failure while reading or storing the message into
// its refusal.
func dataRefusal(err error) *Refusal {
	var se *smtp.SMTPError
	switch {
	case errors.Is(err, queue.ErrNoSpace):
		return refuse("no_space", errNoSpace)
	case errors.Is(err, smtp.ErrTooLongLine):
		// go-smtp's own limit (it then closes the connection).
		return refuse("line_too_long", errLineTooLong)
	case errors.As(err, &se):
		reason := "malformed"
		switch se {
		case smtp.ErrDataTooLarge, errHeaderTooLarge:
			reason = "message_too_large"
		case errBareLineEnding:
			reason = "bare_line_ending"
		case errLineTooLong:
			reason = "line_too_long"
		}
		return refuse(reason, se)
	default:
		// The client went away or timed out; the reply, if it can still be
		// sent, asks for a retry.
		return &Refusal{Reply: errLocal, attrs: []any{"err", err}}
	}
}

func queueRefusal(err error, log logFunc) *Refusal {
	switch {
	case errors.Is(err, queue.ErrNoSpace):
		return refuse("no_space", errNoSpace)
	case errors.Is(err, queue.ErrClosed):
		return refuse("shutting_down", errShutdown)
	default:
		log("error", "relay: queue write failed", "err", err)
		return refuse("queue_error", errLocal)
	}
}

// APISubmission is an HTTP API message's envelope and where it came from.
type APISubmission struct {
	From string
	To   []string
	// UTF8: the envelope or header needs SMTPUTF8 (non-ASCII addresses).
	UTF8     bool
	ClientIP netip.Addr
	Tags     []string
	Metadata map[string]string
	// Also returns records committed in the same batch as the message,
	// given its queue id and Message-ID (an Idempotency-Key's answer).
	Also func(id, messageID string) []queue.Record
}

// Submit is the HTTP API's submission: the checks of MAIL FROM and RCPT
// TO, then what DATA does, for the message msg (CRLF line endings),
// answering only once it is durable. A refusal carries the reply SMTP
// would have given and is counted and logged as SMTP's are.
func (s *Server) Submit(pr Principal, sub APISubmission, msg io.Reader, size int64) (Accepted, *Refusal) {
	log := s.log.With("client", sub.ClientIP.String(), "listener", "api", "user", pr.pr.name)
	logAt := func(level, msg string, attrs ...any) {
		if level == "error" {
			log.Error(msg, attrs...)
			return
		}
		log.Info(msg, attrs...)
	}
	acc, ref := s.submitAPI(pr.pr, sub, msg, size, logAt)
	if ref != nil {
		if ref.Reason != "" {
			s.m.rejected.WithLabelValues(ref.Reason).Inc()
		}
		log.Info("relay: rejected", append([]any{"reason", ref.Reason, "code", ref.Reply.Code}, ref.attrs...)...)
	}
	return acc, ref
}

func (s *Server) submitAPI(pr *principal, sub APISubmission, msg io.Reader, size int64, log logFunc) (Accepted, *Refusal) {
	if s.shutting.Load() {
		return Accepted{}, refuse("shutting_down", errShutdown)
	}
	p := s.policy.Load()
	if size > p.maxSize {
		return Accepted{}, refuse("message_too_large", smtp.ErrDataTooLarge)
	}
	if len(sub.To) == 0 {
		return Accepted{}, refuse("bad_recipient", smtpErr(554, smtp.EnhancedCode{5, 5, 1}, "No valid recipients"))
	}
	// Recipients are checked before the sender takes a message from the
	// rate limit, so a request with a bad address costs no budget.
	rcpts := make([]queue.Recipient, 0, len(sub.To))
	for _, to := range sub.To {
		canon, ref := s.checkRcpt(p, pr, to, sub.UTF8, len(rcpts))
		if ref != nil {
			return Accepted{}, ref
		}
		rcpts = append(rcpts, queue.Recipient{Address: canon})
	}
	from, ref := s.checkMail(p, pr, sub.From, sub.UTF8, size)
	if ref != nil {
		return Accepted{}, ref
	}
	return s.submit(p, submission{pr: pr, from: from, rcpts: rcpts, utf8: sub.UTF8, clientIP: sub.ClientIP.String(),
		tls: true, auth: true, via: "HTTPS", tags: sub.Tags, metadata: sub.Metadata, also: sub.Also}, msg, log)
}

// MaxMessageSize is limits.maxMessageSize in effect.
func (s *Server) MaxMessageSize() int64 { return s.policy.Load().maxSize }

// TLSConfig is the relay's TLS server configuration: the tls section's
// certificate, followed across reloads.
func (s *Server) TLSConfig() *tls.Config { return s.tlsConfig }

// Shutting reports whether the relay has stopped taking mail.
func (s *Server) Shutting() bool { return s.shutting.Load() }

// CheckAddress checks addr as an envelope address (RFC 5321, with RFC 6531
// UTF-8 allowed): the canonical form, or why it is invalid; needsUTF8 says
// the address can only be used over SMTPUTF8.
func CheckAddress(addr string) (canon string, needsUTF8 bool, why string) {
	c, aerr := envelopeAddress(addr, true)
	if aerr != nil {
		return "", false, aerr.why
	}
	return c, !isASCII(c), ""
}
