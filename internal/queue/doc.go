// Package queue is the relay's durable message spool: the write path that
// decides when a message may be acknowledged with 250, recovery after a
// crash, and the per-message state the delivery scheduler updates later.
//
// # Guarantees
//
//   - Commit returns only after the message's data and metadata are on disk
//     and fsynced, together with every directory entry needed to find them.
//     A message whose Commit returned nil survives kill -9 and power loss.
//   - Concurrent commits share fsyncs (group commit): one goroutine appends
//     every pending record to the active segment with one write and one
//     fsync, then wakes all their writers. Throughput grows with concurrency
//     instead of being capped by the disk's fsync rate.
//   - Messages stream to disk. A Writer keeps at most Options.InlineLimit
//     bytes in memory; a larger message spills to its own body file as it
//     arrives.
//   - One process owns a directory: Open takes an exclusive flock(2) on
//     LOCK and fails with ErrLocked naming the holder's PID. The kernel drops
//     the lock when the process dies, so there are no stale lock files.
//   - On Open, torn or partial writes are cut off and unreferenced body files
//     are deleted; every committed message is recovered.
//   - A failed write (disk full included) is truncated away before the next
//     batch is written, so the log never holds a half record followed by
//     good ones; the affected commits fail with ErrNoSpace or another error.
//
// # Handover (scale-down)
//
// A departing pod's queue is handed to the other relays of its pool
// (package peer moves it; this package only gives and takes messages):
//
//	func (q *Queue) IDs(after string, limit int) ([]string, error)
//	func (q *Queue) Export(id string) (Exported, io.ReadCloser, error)
//	func (q *Queue) Import(ctx context.Context, e Exported, body io.Reader, originKey string) (id string, dup bool, err error)
//	func (q *Queue) Remove(id string) error
//
// The drainer pages through IDs, Exports each message (envelope,
// per-recipient state, attempts, next attempt, delay-warned and held
// flags, arrival time and retry deadline, as JSON, plus the body), the
// receiver Imports it - durable with the same Sync commit as intake -
// and only then does the sender Remove it. Import is idempotent on
// originKey: repeating it after a crash between the receiver's commit and
// the sender's Remove returns the first id with dup=true and queues
// nothing, so a handover never makes two copies.
//
// # On-disk format (version 1)
//
//	<dir>/LOCK                        flock target; holds the owner's PID
//	<dir>/segments/<seq>.seg          append-only record log, seq = %016x
//	<dir>/bodies/<id>                 body of a message larger than InlineLimit
//
// A segment starts with a 16-byte header: the magic "MRQSEG1\n" followed by
// the segment's sequence number as a little-endian uint64. Records follow
// back to back:
//
//	offset 0  uint32 LE  payload length n
//	offset 4  uint32 LE  CRC-32C (Castagnoli) of bytes [8, 9+n)
//	offset 8  uint8      record type
//	offset 9  n bytes    payload
//
// Record types:
//
//	1 MESSAGE  uint32 LE metadata length m, m bytes of metadata JSON, then
//	           the message bytes when they are stored inline. The JSON is a
//	           Message plus "spilled": true when the bytes live in
//	           bodies/<id> instead. Message.Header (trace and DKIM-Signature
//	           fields computed after the data arrived) is delivered before the
//	           stored bytes. A later MESSAGE record with the same id replaces
//	           the earlier one (compaction rewrites live messages this way).
//	2 UPDATE   metadata JSON: the message's full new state (recipients,
//	           attempts, next attempt). The newest one wins.
//	3 DONE     the message id: the message is finished (delivered, bounced
//	           or expired) and is forgotten.
//
// Recovery reads the segments in sequence order and applies the records in
// order. It stops reading a segment at the first record whose header or
// payload is incomplete or whose checksum does not match, and truncates the
// segment there: such a record was never acknowledged, because a commit is
// acknowledged only after its whole batch was written and fsynced.
//
// Segments are deleted oldest first, and only when no live message's
// MESSAGE record is in them. That order is what keeps recovery correct: an
// UPDATE or DONE record always lives in the same or a later segment than
// the MESSAGE record it refers to, so it can only disappear after that
// MESSAGE record is gone too. The segment directory is fsynced after each
// deletion, so a crash cannot bring back an older segment whose DONE records
// were in a newer, already deleted one.
//
// Compaction keeps one long-retrying message from pinning every later
// segment: once three quarters of the oldest segment's messages are
// finished, its live ones are rewritten into the active segment as new
// MESSAGE records with their current state (body files are reused, not
// copied), and the emptied segment is deleted.
//
// JSON field names are part of the format; new fields may be added (old
// readers ignore them), existing ones must keep their meaning.
package queue
