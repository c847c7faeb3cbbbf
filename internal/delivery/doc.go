// Package delivery sends queued mail on: to each recipient domain's MX
// hosts (Direct mode) or through one upstream server (Smarthost mode).
//
// Deliverer.Deliver makes one delivery attempt of one message to some of
// its recipients and returns each recipient's outcome - Delivered,
// Deferred (try again later) or Failed (bounce) - with the reason class,
// the RFC 3463 status code, the remote server's full reply, the server's
// name and address, the TLS version and how long it took. It never
// decides when to try again or when to give up: that is the scheduler's,
// with RetryPolicy.
//
// # Routing
//
// Resolver looks up MX records with github.com/miekg/dns against the
// configured resolvers (or resolv.conf): hosts by preference, shuffled
// among equal preferences; the domain itself when there is no MX (RFC 5321
// §5.1); a null MX (RFC 7505) or a nonexistent domain is a permanent
// failure, SERVFAIL or silence a temporary one. Answers are cached within
// their TTL, negative answers for the SOA minimum, failures briefly.
//
// # Sessions
//
// Connections are made with go-smtp's client: EHLO with the pool's
// hostname (also before STARTTLS - see clientConn), opportunistic STARTTLS
// (any certificate; cleartext when STARTTLS is missing or broken, which is
// remembered per server), and RFC 5321 timeouts. A domain with an MTA-STS
// policy in enforce mode (package mtasts) is delivered to only over TLS
// with a certificate valid for an MX host the policy lists; anything less
// is a temporary failure, never cleartext. The next MX is tried when a
// server cannot be reached or refuses the session; servers that failed so
// are remembered for HostDownFor, so a backlog for a dead domain costs one
// connection attempt, not one per message.
//
// All recipients of a destination go in one transaction (more when the
// server says "too many recipients"), with SIZE, SMTPUTF8 and 8BITMIME
// checked first and DSN parameters passed on. Sessions are kept for reuse
// by the next message to the same destination, and a destination never has
// more than MaxConnectionsPerDomain connections open: further deliveries
// wait for one.
//
// Replies are classified: 2xx delivered, 4xx and network errors deferred,
// 5xx failed; a 5.1.x RCPT refusal (no such user) also makes the address a
// suppression candidate, and with Options.Suppressions set it is added to
// the pool's suppression list, so later mail to it bounces at once.
//
// # Wiring to the queue (phase 2)
//
// The scheduler owns internal/queue and calls Deliver; this package does
// not import the queue. For each due message m (queue.Message):
//
//	msg := delivery.Message{ID: m.ID, From: m.From, Size: m.Size,
//		ReceivedAt: m.ReceivedAt, EnvelopeID: m.EnvelopeID, Return: m.Return,
//		EightBit: ..., SMTPUTF8: ..., // from the intake's BODY=/SMTPUTF8 (to be stored in queue.Message)
//		Open: func() (io.ReadCloser, error) { return q.Open(m.ID) }}
//	var rcpts []delivery.Recipient // m.Recipients with State "" (pending)
//	results := d.Deliver(ctx, msg, rcpts)
//
// then per result: Delivered → State "delivered"; Failed → State
// "failed" and, if dsn.Wanted(m.From, r.Notify, dsn.Failed), a failure
// DSN; Deferred → Attempts++, LastAttempt, LastResponse =
// result.Diagnostic(); m.NextAttempt from RetryPolicy.Next (giving up at
// maxAge turns the deferred recipients into failures with
// ReasonExpired), a delay DSN once RetryPolicy.DelayWarningDue says so
// (the "warned" flag belongs in queue.Message). q.Update(m) makes it
// durable before the next attempt; q.Remove(m.ID) once no recipient is
// pending. DSNs are built with dsn.Build from Result.DSNRecipient and the
// header read with dsn.OriginalHeader(q.Open(id)), and queued through a
// queue.Writer with From "" like any other message.
package delivery
