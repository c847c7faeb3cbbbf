// Package scheduler drives delivery of the queue: it finds the messages
// due now, hands their pending recipients to the delivery engine, records
// each recipient's outcome durably in the queue, and decides what happens
// next - try again per the retry schedule, give up at maxAge, send a
// "delayed" or "failed" DSN, or forget the finished message.
//
// # State lives in the queue
//
// Everything the schedule depends on is in queue.Message: each recipient's
// state ("" pending, "delivered", "failed"), the next attempt time, the
// attempt count, whether the delay warning went out, whether the message is
// held, and a bounded history of attempts. The scheduler's memory only
// holds which messages have an attempt in progress, so a restart (or kill
// -9) resumes exactly where the queue says: a message whose outcome was not
// yet written is simply attempted again (at-least-once, never lost).
//
// # Order of writes
//
// A DSN is committed to the queue before the original message's new state
// is, and the original message is removed only after that: a crash in
// between repeats a DSN or a delivery, never loses one. DSNs are ordinary
// queued messages from the null sender, so they are retried like any other
// mail; a message from the null sender never causes a DSN (RFC 5321
// §4.5.5), its failures are counted and logged instead.
//
// # Concurrency and locking
//
// At most Options.Concurrency attempts run at once; the delivery engine
// bounds connections per destination. Writes to one message (an attempt's
// outcome, or hold/release/retry/delete from the admin interface) are
// serialised by a per-message lock and always re-read the queue's current
// copy, so an admin action during an attempt is not overwritten by it.
//
// # Shutdown
//
// Shutdown stops starting attempts, lets those in progress finish until
// its context ends, then cuts them off; cut-off recipients are not counted
// as attempts and are due again at once after a restart.
package scheduler
