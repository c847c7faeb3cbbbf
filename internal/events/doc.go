// Package events owns delivery events and their webhooks: the event
// model (queued, delivered, deferred, bounced, suppressed, expired,
// dsn_sent, one per recipient), how events are stored, and the
// dispatcher that posts them, signed as the Standard Webhooks
// specification says, to the webhook of the credential that sent the
// message.
//
// Events are durable with the change that caused them: the scheduler and
// the intake pass the records of Dispatcher.Records (Queued for intake)
// to the queue's Update, RemoveWith or Writer.Commit, so a crash never
// loses an event and never records one for a change that did not
// happen. Every event is kept in the queue's event log for listing
// (relay queue events) for events.retention; events whose credential
// has a webhook wanting their type are also stored as pending.
//
// The dispatcher posts pending events, at most Concurrency at once and
// PerTarget per host, each within Timeout, following no redirects. A 2xx
// answer forgets the event; anything else is retried with exponential
// backoff and jitter (cenkalti/backoff) until events.retention has passed
// since the event, then it is dropped, logged and counted. Delivery is
// at least once: a crash between a POST and forgetting its event sends
// it again with the same webhook-id. Webhook hosts are checked against
// events.allowedTargets when the configuration is validated, and every
// resolved address again when dialling (no link-local or metadata
// addresses unless listed as a CIDR).
package events
