// Package queue is the relay's durable message spool, on Pebble
// (github.com/cockroachdb/pebble/v2): the write path that decides when a
// message may be acknowledged with 250, the schedule indexes the
// delivery scheduler reads, per-message delivery state, suppressions,
// handover to another relay, and what happens to data that is corrupt.
//
// # Guarantees
//
//   - Commit returns only after the message's metadata, indexes and body
//     are on disk: a Pebble batch committed with Sync, after the body file
//     (if any) and its directory entry were fsynced. A message whose
//     Commit returned nil survives kill -9 and power loss.
//   - Concurrent commits share fsyncs: Pebble's commit pipeline writes
//     every batch waiting with one write-ahead-log write and fsync (group
//     commit), so throughput grows with concurrency.
//   - Messages stream to disk. A Writer keeps at most Options.InlineLimit
//     bytes in memory; a larger message spills to its own body file as it
//     arrives, which is fsynced before the batch that refers to it and
//     deleted after the batch that forgets it.
//   - One process owns a directory: Open takes an exclusive flock(2) on
//     LOCK and fails with ErrLocked naming the holder's PID. The kernel drops
//     the lock when the process dies, so there are no stale lock files.
//   - Every event costs O(log n) whatever the queue's size: a commit, a
//     state change (it moves the message's index entries in the same
//     batch), and finding due work (a bounded range read of the due
//     index). Nothing is held in memory per queued message; message and
//     held counts are Pebble merge counters updated in the same batches.
//   - Deleting a message gives its space back through Pebble's compactions
//     (and at once for a body file).
//   - Open refuses a directory of the old segment-log spool (ErrOldFormat)
//     rather than read it as empty.
//
// # Free-space reserves
//
// Every write checks, before it commits, that the filesystem keeps a
// reserve free, counting the writes in progress so concurrent writers
// cannot overrun it together. The reserve depends on who writes
// (Options.Reserve is queue.minFreeSpace):
//
//	intake (NewWriter, Import)        Reserve
//	DSNs (NewReportWriter)            Reserve / 2
//	delivery state (Update, leases)   Reserve / 4
//	removals, quarantine              Reserve / 8
//
// Each class also leaves twice the memtable size (memTableSizeFor: 1/64
// of the volume, 1 to 32 MiB) for Pebble to start a new write-ahead log. Intake is refused first (ErrNoSpace, which the SMTP session answers with
// 452 4.3.1), so the state and DSN writes of mail already accepted have
// room. Pebble ends the process if its log cannot be written (a half
// written commit pipeline cannot be undone); the reserves keep it from
// getting there.
//
// # Key layout (format "mailroom-spool 2")
//
//	meta/format                   "mailroom-spool 2"
//	m/<id>                        JSON: Message plus where the body is (file) and its length and CRC-32C
//	b/<id>                        the body, when at most InlineLimit bytes
//	d/<next attempt>/<id>         due index: 8-byte big-endian Unix nanoseconds (0: due since queued); empty value
//	h/<id>                        held messages (not in the due index)
//	t/<domain>/<id>               destination index: one per pending recipient domain (lower case)
//	s/<address>                   suppression list entries (package delivery's JSON)
//	i/<origin key>                Import idempotency: JSON {id, at}; kept 30 days
//	k/<principal>/<key>           HTTP API Idempotency-Key answers: JSON APIAnswer, committed with the message; kept 24 h
//	e/<next attempt>/<event id>   pending delivery events for a webhook (package events' JSON), due like d/
//	v/<time>/<event id>           recent delivery events for listing, pruned after events.retention
//	c/messages, c/held            merge counters (little-endian int64 sums)
//
// Files:
//
//	<dir>/LOCK          flock target; holds the owner's PID
//	<dir>/db/           the Pebble store
//	<dir>/bodies/<id>   bodies larger than InlineLimit
//	<dir>/quarantine/<id>  quarantine reports: JSON Quarantined, outside
//	                    the store so they stay readable whatever block of
//	                    it is damaged
//
// Ids are 16 characters of base32hex (lower case): 32 bits of the arrival
// second, then 48 random bits, so m/ lists messages in arrival order and
// the oldest message is the first key. JSON field names are part of the
// format; new fields may be added, existing ones keep their meaning.
//
// # Attempts and leases
//
// The scheduler writes, before each attempt, the message's lease
// (Message.LeaseUntil) and the next attempt as if the attempt will fail,
// as mox's queue does; the outcome replaces both. A crash mid-attempt
// therefore neither loses the message nor makes it due at once: it is due
// again at the lease's next attempt, delivered at most once more.
//
// A message committed by intake while delivery runs, with a worker and a
// destination slot free, gets that lease in its own commit batch (the
// scheduler's IntakeHook) and goes straight to a worker: the same
// guarantee without a separate synced write, so a message delivered at
// once costs two fsynced batches (commit, removal), possibly shared with
// other commits. Otherwise it is committed due at once, and leased when
// a pass of the due index picks it.
//
// # Corruption
//
// Pebble checksums its log and tables; this package checksums bodies
// (length and CRC-32C in m/<id>, checked as they are read).
//
//   - A torn tail of the newest log write is recovered silently by Pebble:
//     it was never acknowledged.
//   - Corruption Pebble cannot recover from at Open (in the MANIFEST or in
//     the middle of a log) makes Open fail with ErrCorrupt: the relay does
//     not start, and says so; docs/queue-recovery.md says what to do.
//   - A record or body that cannot be read is quarantined: a report with
//     the id, the reason and the envelope when known is written to
//     quarantine/<id>, its keys leave the schedule, the event is counted
//     (Corruptions, QuarantinedLen) and logged with the queue id, and its
//     bytes are kept for recovery by hand. A scan that meets a corrupt
//     index block skips past it and continues. After Open a scrub checks
//     that every index entry names a readable record; if the store met
//     corruption, it then walks every record (restoring index entries a
//     damaged region took) and every body, inline or file, quarantining
//     by id what has no readable record. Reading messages finds the rest.
//
// Acknowledged mail is never dropped without a trace: it is delivered,
// bounced with a DSN, listed in the quarantine, or the queue refuses to
// open.
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
// originKey: the key is written in the same batch as the message, so
// repeating an Import after a crash between the receiver's commit and
// the sender's Remove returns the first id with dup=true and queues
// nothing; a handover never makes two copies. Message.Expires is the
// retry deadline when the sender had one other than arrival + maxAge
// (zero: the pool's maxAge from ReceivedAt, which Import keeps).
package queue
