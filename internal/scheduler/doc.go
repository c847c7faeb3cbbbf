// Package scheduler drives delivery of the queue: it finds the messages
// due now, hands their pending recipients to the delivery engine, records
// each recipient's outcome durably in the queue, and decides what happens
// next - try again per the retry schedule, give up at maxAge, send a
// "delayed" or "failed" DSN, or forget the finished message.
//
// # State lives in the queue
//
// Everything the schedule depends on is in queue.Message: each recipient's
// state ("" pending, "delivered", "failed"), the next attempt time (the
// key of the queue's due index), the attempt count, the lease of an
// attempt in progress, whether the delay warning went out, whether the
// message is held, and a bounded history of attempts. The scheduler's
// memory holds only the messages in flight and per-destination counts, so
// a restart (or kill -9) resumes where the queue says.
//
// # Finding work
//
// Each pass reads the due index from its start with a limit (a page of
// 256, at most 4096 entries a pass), so its cost does not depend on how
// long the queue is. A message is started when every destination it
// needs (its pending recipients' domains, or the smarthost) has fewer than
// PerDestination attempts in progress - the delivery engine's connection
// cap - so an attempt never waits for a connection while holding a
// worker. Messages of a destination at its cap are moved ahead
// (unsynced: losing that in a crash only makes them due earlier): for a
// destination that is flowing, each to when a slot should be free for it
// (its place in line times the mean time between finished attempts); for
// one that finished nothing for 5s, by a delay doubling to 10s. So a
// black-holed domain with a big backlog neither holds workers nor is
// re-read by every pass, and a busy healthy one keeps its slots full.
//
// # Order of writes
//
//  1. Before an attempt, its lease and the next attempt as if it will
//     fail are written (mox's queue does the same). A crash mid-attempt
//     then neither loses the message nor makes it due at once. If the
//     lease cannot be written (disk full), the attempt is not made and
//     attempts pause with backoff.
//  2. After it, a DSN is committed before the original's new state, and
//     the original is removed only after that: a crash in between repeats
//     a DSN or a delivery, never loses one. DSNs are ordinary queued
//     messages from the null sender (written with the queue's report
//     reserve, DKIM-signed through Options.Sign); a message from the null
//     sender never causes a DSN (RFC 5321 §4.5.5).
//  3. If the outcome cannot be written, the message stays in flight
//     ("parked") and the write is retried with backoff until it succeeds:
//     it is never made due again, so a full disk costs at most one
//     duplicate delivery (after a crash, at the lease's next attempt),
//     never a storm. mailroom_queue_state_write_failures_total and
//     mailroom_queue_parked_messages count it.
//
// A pass that tried no server because all were remembered as down
// (delivery.ReasonHostDown) is not an attempt: attempts and the
// recipient's last attempt time (the DSN's Last-Attempt-Date) stay, and
// the message is due when the servers may be tried again.
//
// # Concurrency and locking
//
// At most Options.Concurrency attempts run at once. Writes to one message
// (lease, outcome, or hold/release/retry/delete from the admin interface)
// are serialised by a per-message lock and always re-read the queue's
// current copy, so an admin action during an attempt is not overwritten
// by it.
//
// # Shutdown
//
// Shutdown stops starting attempts, lets those in progress finish until
// its context ends, then cuts them off; cut-off recipients are not counted
// as attempts and are due again at once after a restart.
package scheduler
