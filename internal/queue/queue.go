package queue

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
)

var (
	// ErrLocked is returned by Open when another process owns the directory.
	ErrLocked = errors.New("queue directory is in use by another process")
	// ErrNoSpace is returned when a write would eat into the free-space
	// reserve of its class, or the disk is full.
	ErrNoSpace = errors.New("queue: no space left on device")
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("queue: closed")
	// ErrNotFound is returned for an unknown message id.
	ErrNotFound = errors.New("queue: no such message")
	// ErrOldFormat is returned by Open for a directory written by the
	// segment-log spool of earlier relays.
	ErrOldFormat = errors.New("queue: directory holds an old-format (segment-log) spool")
	// ErrCorrupt marks data that failed its checksum or does not decode.
	ErrCorrupt = errors.New("queue: corrupt data")
)

// Message is a queued message's metadata: its envelope and delivery state.
// It is stored as JSON under m/<id>.
type Message struct {
	ID         string      `json:"id"`
	From       string      `json:"from"` // envelope sender; "" is the null sender
	Recipients []Recipient `json:"rcpts"`
	ReceivedAt time.Time   `json:"received"`
	// Size is the length of the message as delivered: Header plus the
	// stored bytes.
	Size int64 `json:"size"`
	// Origin says who submitted the message: "user:<name>",
	// "network:<name>", "dsn:<id>".
	Origin string `json:"origin,omitempty"`
	// Header holds header fields computed after the data arrived (the
	// DKIM-Signature fields) that are delivered before the stored bytes.
	Header string `json:"header,omitempty"`
	// EnvelopeID and Return are the DSN parameters ENVID and RET (RFC 3461).
	EnvelopeID string `json:"envid,omitempty"`
	Return     string `json:"ret,omitempty"`

	// EightBit says the content is not 7-bit (BODY=8BITMIME or 8-bit
	// bytes seen at intake); SMTPUTF8 that the envelope or header needs
	// SMTPUTF8. Delivery passes both on, or fails where they are refused.
	EightBit bool `json:"8bit,omitempty"`
	SMTPUTF8 bool `json:"smtputf8,omitempty"`

	Attempts int `json:"attempts,omitempty"`
	// NextAttempt is when the message is due; zero: now. It is the key of
	// the due index, so changing it moves the message in the schedule.
	NextAttempt time.Time `json:"next,omitempty"`
	// LeaseUntil is set while an attempt is in progress: the attempt's
	// lease, written before the attempt starts together with a
	// NextAttempt as if it will fail, so a crash mid-attempt neither
	// loses the message nor makes it due at once.
	LeaseUntil time.Time `json:"lease,omitempty"`
	// DelayWarned records that the one "delayed" DSN was queued, so a
	// restart never sends a second.
	DelayWarned bool `json:"warned,omitempty"`
	// Held messages are not attempted until released (admin interface).
	Held bool `json:"held,omitempty"`
	// History is the most recent delivery attempts, newest last, for the
	// admin interface; the scheduler bounds its length.
	History []Attempt `json:"history,omitempty"`
	// Expires is the retry deadline when it is not ReceivedAt plus the
	// retry policy's maxAge (zero): a message handed over keeps its
	// sender's deadline.
	Expires time.Time `json:"expires,omitempty"`
	// Handover is the Import idempotency key of a message handed over by
	// another relay.
	Handover string `json:"handover,omitempty"`
	// MessageID is the message's Message-ID header field value (without
	// angle brackets), echoed in delivery events.
	MessageID string `json:"msgid,omitempty"`
	// Tags and Metadata come with an HTTP API submission and are echoed
	// back in every event of the message; they are never delivered.
	Tags     []string          `json:"tags,omitempty"`
	Metadata map[string]string `json:"meta,omitempty"`
}

// Attempt is one recipient's outcome of one delivery attempt.
type Attempt struct {
	Time      time.Time `json:"time"`
	Recipient string    `json:"rcpt"`
	// Status is "delivered", "deferred" or "bounced"; Reason its class.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	Code   string `json:"code,omitempty"`
	// Host and IP are the remote server; TLS its session's version.
	Host string `json:"host,omitempty"`
	IP   string `json:"ip,omitempty"`
	TLS  string `json:"tls,omitempty"`
	// Reply is the remote server's full reply, or what went wrong without
	// one.
	Reply string `json:"reply,omitempty"`
}

// Recipient is one envelope recipient and its delivery state.
type Recipient struct {
	Address string `json:"addr"`
	// State is "" (pending), "delivered" or "failed".
	State       string    `json:"state,omitempty"`
	Attempts    int       `json:"attempts,omitempty"`
	LastAttempt time.Time `json:"last,omitempty"`
	// LastResponse is the last SMTP reply or error seen for this recipient.
	LastResponse string `json:"resp,omitempty"`
	// Notify and OriginalRecipient are the DSN parameters NOTIFY and ORCPT.
	Notify            []string `json:"notify,omitempty"`
	OriginalRecipient string   `json:"orcpt,omitempty"`
}

// Clone returns a copy of m that shares no slices or maps with it.
func (m Message) Clone() Message { return m.clone() }

func (m Message) clone() Message {
	m.Recipients = slices.Clone(m.Recipients)
	m.History = slices.Clone(m.History)
	m.Tags = slices.Clone(m.Tags)
	m.Metadata = maps.Clone(m.Metadata)
	for i := range m.Recipients {
		m.Recipients[i].Notify = slices.Clone(m.Recipients[i].Notify)
	}
	return m
}

// Domains returns the lower-cased domains of the pending recipients, each
// once, in order of first appearance.
func (m *Message) Domains() []string {
	var out []string
	for _, r := range m.Recipients {
		if r.State != "" {
			continue
		}
		d := domainOf(r.Address)
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

func domainOf(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	return strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
}

// Options tune a Queue. Zero values mean the defaults.
type Options struct {
	// InlineLimit is the largest message body kept in memory and stored in
	// the database itself; larger ones stream to their own body file.
	// Default 64 KiB.
	InlineLimit int
	// Reserve is the free space (bytes) intake leaves on the filesystem:
	// a new message is refused with ErrNoSpace when the space left after
	// it would be less. Writes for mail already accepted have smaller
	// reserves (see the package doc), so they keep working after intake
	// stopped. 0: no reserve (tests).
	Reserve int64
	// CacheSize is Pebble's block cache; default 16 MiB.
	CacheSize int64
	// Logger receives recovery, corruption and failure reports. Default
	// slog.Default().
	Logger *slog.Logger
	// OnCommit, if set, reports group commit: once per write-ahead-log
	// fsync, with the mean time a commit took and the number of commits
	// that fsync carried, both averaged over the last second (Pebble's
	// pipeline does not say which commits shared which fsync).
	OnCommit func(d time.Duration, records int)
	// Now is the clock (quarantine times, Import keys); default time.Now.
	Now func() time.Time
	// SyncInterval is the least time between write-ahead-log fsyncs
	// (Pebble's WALMinSyncInterval): commits arriving meanwhile wait and
	// share the next one.
	SyncInterval time.Duration
	// Statfs, if set, replaces the filesystem's free-space figure in the
	// reserve checks (tests).
	Statfs func() (free uint64, err error)
}

// RecoveryStats describes what Open found.
type RecoveryStats struct {
	Messages     int // messages in the queue
	OrphanBodies int // body files without a committed message, deleted
}

// Quarantined is a message whose stored state could not be read, set
// aside under q/<id> so the rest of the queue keeps working.
type Quarantined struct {
	ID     string    `json:"id"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// From and Recipients are filled in when the metadata was readable
	// (the body was not).
	From       string      `json:"from,omitempty"`
	Recipients []Recipient `json:"rcpts,omitempty"`
}

// Queue is an open queue directory. Its methods are safe for concurrent use.
type Queue struct {
	dir, dbDir, bodyDir string
	quarDir             string // quarantine reports, outside the store
	opts                Options
	log                 *slog.Logger
	lock                *os.File
	db                  *pebble.DB
	cache               interface{ Unref() }

	added chan struct{} // signalled (coalesced) when a message is committed

	closeMu  sync.RWMutex // held shared by every operation, exclusively by Close
	closed   bool
	locks    [256]sync.Mutex // per-message read-modify-write, by hash of the id
	importMu sync.Mutex      // serialises Import's check and commit

	spaceMu sync.Mutex
	pending int64 // bytes of commits in progress, not yet seen by statfs

	intakeHook  atomic.Pointer[IntakeHook]
	commits     atomic.Int64 // Sync commits, for OnCommit
	commitNanos atomic.Int64
	stopReport  chan struct{}
	reportDone  chan struct{}

	// memTable is Pebble's memtable size (memTableSizeFor).
	memTable int64

	recovery    RecoveryStats
	quarantined atomic.Int64
	corruptions atomic.Int64
	scrubbed    chan struct{}
	dueFloor    dueFloor
}

// Write classes, by how much free space each leaves. Intake refuses
// first, so the writes that finish mail already accepted have room.
type class int

const (
	classIntake class = iota // new mail: Reserve
	classReport              // DSNs: Reserve/2
	classState               // state of accepted mail: Reserve/4
	classFree                // removals, which give space back: Reserve/8
)

// reserve is the free space class c leaves, for an intake reserve r: a
// share of r, plus walRoom for Pebble to start a new write-ahead log (it
// preallocates 110% of the memtable size, and cannot survive that
// failing).
func (c class) reserve(r, walRoom int64) int64 {
	if r <= 0 {
		return 0
	}
	return r>>uint(c) + walRoom
}

// memTableSizeFor is the memtable size for a spool on a filesystem of
// total bytes: 1/64 of it, between 1 and 32 MiB. A large memtable is
// what makes the queue fast: a message delivered before its memtable is
// flushed never reaches a table, and fewer, larger flushes mean less
// compaction (32 MiB intake ran about 1.25x the 4 MiB rate in
// bench-intake). But each memtable's write-ahead log is preallocated, and
// that room is kept free (walRoom), so a small volume gets a small one.
func memTableSizeFor(total uint64) int64 {
	return int64(min(max(total/64, 1<<20), 32<<20))
}

const formatKey = "meta/format"
const formatValue = "mailroom-spool 2"

// Key prefixes; see the package doc.
const (
	pMsg     = "m/"
	pBody    = "b/"
	pDue     = "d/"
	pHeld    = "h/"
	pDest    = "t/"
	pSupp    = "s/"
	pIdem    = "i/"
	kMsgs    = "c/messages"
	kHeld    = "c/held"
	idLength = 16
)

// Open locks dir (creating it if needed), opens its store and removes
// body files no committed message refers to.
func Open(dir string, opts Options) (*Queue, error) {
	if opts.InlineLimit <= 0 {
		opts.InlineLimit = 64 << 10
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 16 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	q := &Queue{
		dir:      dir,
		dbDir:    filepath.Join(dir, "db"),
		bodyDir:  filepath.Join(dir, "bodies"),
		quarDir:  filepath.Join(dir, "quarantine"),
		opts:     opts,
		log:      opts.Logger,
		added:    make(chan struct{}, 1),
		scrubbed: make(chan struct{}),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := checkNotOldFormat(dir); err != nil {
		return nil, err
	}
	if err := q.takeLock(); err != nil {
		return nil, err
	}
	fail := func(err error) (*Queue, error) {
		if q.db != nil {
			q.db.Close()
		}
		if q.cache != nil {
			q.cache.Unref()
		}
		q.lock.Close()
		return nil, err
	}
	for _, d := range []string{q.bodyDir, q.quarDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fail(fmt.Errorf("queue: %w", err))
		}
	}
	// The directories' own entries must be durable before anything in them
	// is acknowledged (a freshly created spool on first start).
	for _, d := range []string{filepath.Dir(filepath.Clean(dir)), dir, q.bodyDir, q.quarDir} {
		if err := syncDir(d); err != nil {
			return fail(fmt.Errorf("queue: %w", err))
		}
	}
	_, total, err := q.FreeBytes()
	if err != nil {
		return fail(fmt.Errorf("queue: statfs: %w", err))
	}
	q.memTable = memTableSizeFor(total)
	cache := pebble.NewCache(opts.CacheSize)
	q.cache = cache
	popts := &pebble.Options{
		Cache:        cache,
		MemTableSize: uint64(q.memTable),
		Merger:       counterMerger,
		Logger:       pebbleLogger{q.log},
		// Pebble's default for corruption found while reading is to end
		// the process; here the read fails instead, and what it was
		// reading is quarantined, so the rest of the queue keeps working.
		EventListener: &pebble.EventListener{
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				q.corruptions.Add(1)
				q.log.Error("queue: corrupt data in the store", "file", info.Path,
					"keys", fmt.Sprintf("[%q, %q]", info.Bounds.Start, info.Bounds.End.Key), "err", info.Details)
			},
			BackgroundError: func(err error) { q.log.Error("queue: store background error", "err", err) },
		},
		// Newest format: this store has no older readers to stay
		// compatible with.
		FormatMajorVersion: pebble.FormatNewest,
	}
	if iv := opts.SyncInterval; iv > 0 {
		popts.WALMinSyncInterval = func() time.Duration { return iv }
	}
	// No value separation (blob files): Pebble v2.1.7 panics on a corrupt
	// blob file (reportCorruption of a nil file), which the corruption
	// fuzz test found; a corrupt table block is reported as an error.
	db, err := pebble.Open(q.dbDir, popts)
	if err != nil {
		if pebble.IsCorruptionError(err) {
			err = fmt.Errorf("%w: %s cannot be opened: %v (see docs/queue-recovery.md)", ErrCorrupt, q.dbDir, err)
		} else {
			err = fmt.Errorf("queue: open %s: %w", q.dbDir, err)
		}
		return fail(err)
	}
	q.db = db
	if err := q.checkFormat(); err != nil {
		return fail(err)
	}
	if err := q.countQuarantined(); err != nil {
		return fail(fmt.Errorf("queue: %w", err))
	}
	if err := q.removeOrphanBodies(); err != nil {
		return fail(err)
	}
	q.recovery.Messages = q.Len()
	q.log.Info("queue: opened", "dir", q.dir, "messages", q.recovery.Messages, "orphan_bodies", q.recovery.OrphanBodies, "memtable_bytes", q.memTable)
	go q.scrub()
	q.stopReport, q.reportDone = make(chan struct{}), make(chan struct{})
	if opts.OnCommit != nil {
		go q.reportCommits()
	} else {
		close(q.reportDone)
	}
	return q, nil
}

// checkNotOldFormat refuses a directory of the segment-log spool: reading
// it as empty would silently drop its mail.
func checkNotOldFormat(dir string) error {
	segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*.seg"))
	if len(segs) > 0 {
		return fmt.Errorf("%w: %s has %d segment files; this relay keeps its spool in Pebble (format 2) and cannot read them. "+
			"Deliver that queue with the relay version that wrote it, or move the directory away (see docs/queue-recovery.md)",
			ErrOldFormat, filepath.Join(dir, "segments"), len(segs))
	}
	return nil
}

// checkFormat writes the format marker into a new store and refuses a
// store with another one.
func (q *Queue) checkFormat() error {
	v, closer, err := q.db.Get([]byte(formatKey))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return q.db.Set([]byte(formatKey), []byte(formatValue), pebble.Sync)
	case err != nil:
		return fmt.Errorf("%w: reading the format marker: %v (see docs/queue-recovery.md)", ErrCorrupt, err)
	}
	defer closer.Close()
	if string(v) != formatValue {
		return fmt.Errorf("queue: %s has format %q, this relay reads %q", q.dbDir, v, formatValue)
	}
	return nil
}

func (q *Queue) takeLock() error {
	path := filepath.Join(q.dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(holder))
			if pid == "" {
				pid = "unknown"
			}
			return fmt.Errorf("%w: %s is locked by pid %s", ErrLocked, q.dir, pid)
		}
		return fmt.Errorf("queue: lock %s: %w", path, err)
	}
	// The PID is informational: the flock, not the file's content, is the
	// lock, so a PID left behind by a dead process is harmless.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	q.lock = f
	return nil
}

// removeOrphanBodies deletes body files of messages that were never
// committed (a crash during intake) or whose removal was interrupted. It
// runs before any writer exists.
func (q *Queue) removeOrphanBodies() error {
	des, err := os.ReadDir(q.bodyDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	for _, de := range des {
		id := de.Name()
		if _, err := q.getDisk(id); err == nil || !errors.Is(err, ErrNotFound) || q.isQuarantined(id) {
			continue // referenced, or unreadable: kept for the quarantine
		}
		if err := os.Remove(filepath.Join(q.bodyDir, id)); err != nil {
			return fmt.Errorf("queue: remove orphan body: %w", err)
		}
		q.recovery.OrphanBodies++
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// classify wraps out-of-space errors in ErrNoSpace.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// enter guards an operation against a concurrent Close.
func (q *Queue) enter() error {
	q.closeMu.RLock()
	if q.closed {
		q.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (q *Queue) leave() { q.closeMu.RUnlock() }

// Close waits for operations in progress, then closes the store and
// releases the directory.
func (q *Queue) Close() error {
	q.closeMu.Lock()
	if q.closed {
		q.closeMu.Unlock()
		return ErrClosed
	}
	q.closed = true
	q.closeMu.Unlock()
	<-q.scrubbed
	close(q.stopReport)
	<-q.reportDone
	// Flushing moves the write-ahead log into checksummed tables, so a
	// clean restart replays nothing.
	err := q.db.Flush()
	if cerr := q.db.Close(); err == nil {
		err = cerr
	}
	q.cache.Unref()
	if cerr := q.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// Err reports ErrClosed after Close, or nil. (A store that can no longer
// write makes Pebble end the process; there is no failed state to report.)
func (q *Queue) Err() error {
	q.closeMu.RLock()
	defer q.closeMu.RUnlock()
	if q.closed {
		return ErrClosed
	}
	return nil
}

// Recovery returns what Open found and repaired.
func (q *Queue) Recovery() RecoveryStats { return q.recovery }

// Dir returns the queue directory.
func (q *Queue) Dir() string { return q.dir }

// Len returns the number of messages in the queue.
func (q *Queue) Len() int { return int(q.counter(kMsgs)) }

// HeldLen returns the number of held messages.
func (q *Queue) HeldLen() int { return int(q.counter(kHeld)) }

func (q *Queue) counter(key string) int64 {
	v, closer, err := q.db.Get([]byte(key))
	if err != nil {
		return 0
	}
	defer closer.Close()
	return decodeCount(v)
}

// Added is signalled after a new message has been committed. Signals are
// coalesced: one receive may stand for many messages.
func (q *Queue) Added() <-chan struct{} { return q.added }

func (q *Queue) signalAdded() {
	select {
	case q.added <- struct{}{}:
	default:
	}
}

// diskMessage is what m/<id> holds: the Message plus where its bytes are
// and their checksum.
type diskMessage struct {
	Message
	// File: the body is bodies/<id> rather than b/<id>.
	File bool `json:"file,omitempty"`
	// BodyLen and BodyCRC (CRC-32C) check the stored bytes when read.
	BodyLen int64  `json:"bodyLen"`
	BodyCRC uint32 `json:"bodyCRC"`
}

func msgKey(id string) []byte  { return []byte(pMsg + id) }
func bodyKey(id string) []byte { return []byte(pBody + id) }
func heldKey(id string) []byte { return []byte(pHeld + id) }

func dueKey(t time.Time, id string) []byte { return timeKey(pDue, t, id) }

// timeKey is a key of a time-ordered index (the due index, pending
// events): prefix, 8-byte big-endian Unix nanoseconds (dueTime), '/', id.
func timeKey(prefix string, at time.Time, id string) []byte {
	k := make([]byte, 0, len(prefix)+9+len(id))
	k = append(k, prefix...)
	k = binary.BigEndian.AppendUint64(k, dueTime(at))
	k = append(k, '/')
	return append(k, id...)
}

// parseTimeKey splits a timeKey under prefix; the id must not be empty.
func parseTimeKey(prefix string, k []byte) (time.Time, string, bool) {
	if len(k) <= len(prefix)+9 || k[len(prefix)+8] != '/' {
		return time.Time{}, "", false
	}
	var t time.Time
	if n := binary.BigEndian.Uint64(k[len(prefix):]); n > 0 {
		t = time.Unix(0, int64(n)).UTC()
	}
	return t, string(k[len(prefix)+9:]), true
}

// dueTime orders the due index; zero (due now) sorts first.
func dueTime(t time.Time) uint64 {
	if t.IsZero() || t.UnixNano() < 0 {
		return 0
	}
	return uint64(t.UnixNano())
}

func parseDueKey(k []byte) (time.Time, string, bool) {
	t, id, ok := parseTimeKey(pDue, k)
	if !ok || len(id) != idLength {
		return time.Time{}, "", false
	}
	return t, id, true
}

func destKey(domain, id string) []byte { return []byte(pDest + domain + "/" + id) }

// getDisk reads m/<id>: ErrNotFound, an error wrapping ErrCorrupt, or the
// record.
func (q *Queue) getDisk(id string) (diskMessage, error) {
	v, closer, err := q.db.Get(msgKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return diskMessage{}, ErrNotFound
	}
	if err != nil {
		// Pebble marks checksum failures as corruption; a table cut short
		// or unreadable fails otherwise. Either way the record cannot be
		// read back: treated alike, so it is quarantined, not lost.
		return diskMessage{}, fmt.Errorf("%w: m/%s: %v", ErrCorrupt, id, err)
	}
	defer closer.Close()
	var dm diskMessage
	if err := json.Unmarshal(v, &dm); err != nil || dm.ID != id {
		if err == nil {
			err = fmt.Errorf("record names id %q", dm.ID)
		}
		return diskMessage{}, fmt.Errorf("%w: m/%s: %v", ErrCorrupt, id, err)
	}
	return dm, nil
}

// Get returns one message's metadata. A message whose record is corrupt
// is quarantined and reported as not found.
func (q *Queue) Get(id string) (Message, bool) {
	if len(id) != idLength {
		return Message{}, false
	}
	dm, err := q.getDisk(id)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			q.Quarantine(id, err.Error())
		}
		return Message{}, false
	}
	return dm.Message, true
}

// indexKeys are the index entries a message has: due (or held) and one
// per pending recipient domain.
func indexKeys(m *Message) [][]byte {
	var ks [][]byte
	if m.Held {
		ks = append(ks, heldKey(m.ID))
	} else {
		ks = append(ks, dueKey(m.NextAttempt, m.ID))
	}
	for _, d := range m.Domains() {
		ks = append(ks, destKey(d, m.ID))
	}
	return ks
}

// putMessage adds m/<id> and m's index entries to b, deleting those of old
// (nil for a new message) that m no longer has.
func putMessage(b *pebble.Batch, dm diskMessage, old *diskMessage) error {
	v, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	if err := b.Set(msgKey(dm.ID), v, nil); err != nil {
		return err
	}
	now := indexKeys(&dm.Message)
	if old != nil {
		for _, k := range indexKeys(&old.Message) {
			if !slices.ContainsFunc(now, func(n []byte) bool { return bytes.Equal(n, k) }) {
				if err := b.Delete(k, nil); err != nil {
					return err
				}
			}
		}
		if old.Held != dm.Held {
			d := int64(1)
			if !dm.Held {
				d = -1
			}
			if err := b.Merge([]byte(kHeld), encodeCount(d), nil); err != nil {
				return err
			}
		}
	} else {
		if err := b.Merge([]byte(kMsgs), encodeCount(1), nil); err != nil {
			return err
		}
		if dm.Held {
			if err := b.Merge([]byte(kHeld), encodeCount(1), nil); err != nil {
				return err
			}
		}
	}
	for _, k := range now {
		if err := b.Set(k, nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// deleteMessage adds the removal of dm and its index entries to b.
func deleteMessage(b *pebble.Batch, dm *diskMessage) error {
	for _, k := range append(indexKeys(&dm.Message), msgKey(dm.ID), bodyKey(dm.ID)) {
		if err := b.Delete(k, nil); err != nil {
			return err
		}
	}
	if err := b.Merge([]byte(kMsgs), encodeCount(-1), nil); err != nil {
		return err
	}
	if dm.Held {
		return b.Merge([]byte(kHeld), encodeCount(-1), nil)
	}
	return nil
}

func (q *Queue) lockID(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &q.locks[h.Sum32()%uint32(len(q.locks))]
}

// commit makes b durable (Sync; concurrent commits share an fsync in
// Pebble's commit pipeline) after checking that it leaves its class's
// reserve free. extra is space the commit uses beyond the batch (a body
// file already written counts as used by statfs, so it is 0 then).
func (q *Queue) commit(b *pebble.Batch, c class, extra int64) error {
	return q.commitOpts(b, c, extra, pebble.Sync)
}

func (q *Queue) commitOpts(b *pebble.Batch, c class, extra int64, wo *pebble.WriteOptions) error {
	n := int64(len(b.Repr())) + extra
	release, err := q.claim(c, n)
	if err != nil {
		return err
	}
	defer release()
	start := time.Now()
	synced := wo == pebble.Sync
	if synced {
		// Counted before the batch becomes visible (Pebble publishes it
		// before Commit returns), so whoever sees its effect sees the count.
		q.commits.Add(1)
	}
	if err := b.Commit(wo); err != nil {
		if synced {
			q.commits.Add(-1)
		}
		return classify(fmt.Errorf("queue: commit: %w", err))
	}
	if synced {
		q.commitNanos.Add(int64(time.Since(start)))
	}
	return nil
}

// reportCommits feeds Options.OnCommit once a second.
func (q *Queue) reportCommits() {
	defer close(q.reportDone)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastSyncs := q.WALSyncs()
	var lastCommits, lastNanos int64
	for {
		select {
		case <-q.stopReport:
			return
		case <-t.C:
		}
		syncs, commits, nanos := q.WALSyncs(), q.commits.Load(), q.commitNanos.Load()
		ds, dc, dn := int64(syncs-lastSyncs), commits-lastCommits, nanos-lastNanos
		lastSyncs, lastCommits, lastNanos = syncs, commits, nanos
		if ds <= 0 || dc <= 0 {
			continue
		}
		mean := time.Duration(dn / dc)
		for i := int64(0); i < ds; i++ {
			// Spread the commits over the fsyncs so their sum is exact.
			n := dc/ds + btoi(i < dc%ds)
			q.opts.OnCommit(mean, int(n))
		}
	}
}

func btoi(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// claim reserves n bytes for a write of class c, or returns ErrNoSpace
// when the filesystem's free space minus the writes in progress would
// drop below the class's reserve. Counting writes in progress is what
// keeps concurrent writers from overrunning the reserve together.
func (q *Queue) claim(c class, n int64) (func(), error) {
	r := c.reserve(q.opts.Reserve, q.LogRoom())
	if r <= 0 {
		return func() {}, nil
	}
	q.spaceMu.Lock()
	defer q.spaceMu.Unlock()
	free, err := q.free()
	if err != nil {
		return nil, fmt.Errorf("queue: statfs: %w", err)
	}
	if int64(free)-q.pending-n < r {
		return nil, fmt.Errorf("%w: %d bytes free, %d more needed above the reserve of %d bytes", ErrNoSpace, free, n, r)
	}
	q.pending += n
	return func() {
		q.spaceMu.Lock()
		q.pending -= n
		q.spaceMu.Unlock()
	}, nil
}

func (q *Queue) free() (uint64, error) {
	if q.opts.Statfs != nil {
		return q.opts.Statfs()
	}
	free, _, err := q.FreeBytes()
	return free, err
}

// LogRoom is the free space every write leaves, on top of its class's
// share of the reserve, for Pebble to start a new write-ahead log: twice
// the memtable size (memTableSizeFor).
func (q *Queue) LogRoom() int64 { return 2 * q.memTable }

// SetReserve changes the intake reserve (queue.minFreeSpace, reloadable).
func (q *Queue) SetReserve(n int64) {
	q.spaceMu.Lock()
	q.opts.Reserve = n
	q.spaceMu.Unlock()
}

// Update durably replaces a message's metadata (recipient states, attempts,
// next attempt, hold) and moves its index entries. The id and the stored
// bytes cannot change.
// also are written in the same batch (delivery events).
func (q *Queue) Update(m Message, also ...Record) error {
	_, err := q.modify(m.ID, classState, pebble.Sync, func(old diskMessage, b *pebble.Batch) (bool, error) {
		dm := old
		dm.Message = m.clone()
		// Fields fixed at submission stay as they were.
		dm.Header, dm.Size = old.Header, old.Size
		if err := putMessage(b, dm, &old); err != nil {
			return false, err
		}
		return true, putRecords(b, also)
	})
	q.noteDue(&m)
	return err
}

// Record is a key written in the same batch as a message's commit, update
// or removal, so that it is durable exactly when that change is. Records
// are made by this package's constructors (each owning a key prefix).
type Record struct {
	key, value []byte
	del        bool
}

func putRecords(b *pebble.Batch, rs []Record) error {
	for _, r := range rs {
		var err error
		if r.del {
			err = b.Delete(r.key, nil)
		} else {
			err = b.Set(r.key, r.value, nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Postpone moves message id, due at was, to be due at at, unless it has
// been changed meanwhile. The write is not synced: losing it in a crash
// only makes the message due earlier, which is safe.
func (q *Queue) Postpone(id string, was, at time.Time) error {
	_, err := q.modify(id, classState, pebble.NoSync, func(old diskMessage, b *pebble.Batch) (bool, error) {
		if old.Held || !old.NextAttempt.Equal(was) {
			return false, nil
		}
		dm := old
		dm.Message = old.Message.clone()
		dm.NextAttempt = at
		return true, putMessage(b, dm, &old)
	})
	q.dueFloor.note(at)
	return err
}

// Remove durably forgets a finished message and frees its storage.
func (q *Queue) Remove(id string) error { return q.RemoveWith(id) }

// RemoveWith is Remove with records written in the same batch.
func (q *Queue) RemoveWith(id string, also ...Record) error {
	_, err := q.modifyThen(id, classFree, pebble.Sync, func(old diskMessage, b *pebble.Batch) (bool, error) {
		if err := deleteMessage(b, &old); err != nil {
			return false, err
		}
		return true, putRecords(b, also)
	}, func(old diskMessage) {
		if old.File {
			// After the batch that forgets it, still under the message's
			// lock (so the scrub never sees a body file without its record
			// that is not an orphan); not fsynced: a body file that
			// reappears after a crash has no message and is deleted by Open.
			_ = os.Remove(filepath.Join(q.bodyDir, id))
		}
	})
	return err
}

// modify is a read-modify-write of message id under its lock: fn adds
// the changes to the batch (or returns false for none), which is then
// committed as class c.
func (q *Queue) modify(id string, c class, wo *pebble.WriteOptions, fn func(old diskMessage, b *pebble.Batch) (bool, error)) (diskMessage, error) {
	return q.modifyThen(id, c, wo, fn, nil)
}

// modifyThen is modify calling after (when not nil) once the batch is
// committed, still under the message's lock.
func (q *Queue) modifyThen(id string, c class, wo *pebble.WriteOptions, fn func(old diskMessage, b *pebble.Batch) (bool, error), after func(old diskMessage)) (diskMessage, error) {
	if err := q.enter(); err != nil {
		return diskMessage{}, err
	}
	defer q.leave()
	l := q.lockID(id)
	l.Lock()
	defer l.Unlock()
	old, err := q.getDisk(id)
	if err != nil {
		return old, err
	}
	b := q.db.NewBatch()
	defer b.Close()
	if write, err := fn(old, b); err != nil || !write {
		return old, err
	}
	if err := q.commitOpts(b, c, 0, wo); err != nil {
		return old, err
	}
	if after != nil {
		after(old)
	}
	return old, nil
}

// Open returns the message's bytes as they are to be delivered: Header
// followed by the stored data. The stored data is checked against its
// length and CRC as it is read; a mismatch is an error wrapping ErrCorrupt
// at the end of the data (before a caller could complete a transaction
// with it) and quarantines the message.
func (q *Queue) Open(id string) (io.ReadCloser, error) {
	dm, rc, err := q.openBody(id)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(strings.NewReader(dm.Header), rc), rc}, nil
}

// openBody returns the record and a checked reader of the stored bytes.
func (q *Queue) openBody(id string) (diskMessage, io.ReadCloser, error) {
	dm, err := q.getDisk(id)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			q.Quarantine(id, err.Error())
		}
		return dm, nil, err
	}
	var r io.Reader
	var c io.Closer
	if dm.File {
		f, err := os.Open(filepath.Join(q.bodyDir, id))
		if err != nil {
			err = fmt.Errorf("%w: body file of %s: %v", ErrCorrupt, id, err)
			q.QuarantineMessage(&dm.Message, err.Error())
			return dm, nil, err
		}
		r, c = f, f
	} else {
		v, closer, err := q.db.Get(bodyKey(id))
		if err != nil {
			err = fmt.Errorf("%w: b/%s: %v", ErrCorrupt, id, err)
			q.QuarantineMessage(&dm.Message, err.Error())
			return dm, nil, err
		}
		// The value is only valid until closer.Close; delivery reads it
		// over seconds, so it is copied (at most InlineLimit bytes).
		data := bytes.Clone(v)
		closer.Close()
		r, c = bytes.NewReader(data), io.NopCloser(nil)
	}
	cr := &checkedReader{r: r, want: dm.BodyLen, crc: dm.BodyCRC, onBad: func(why string) {
		q.QuarantineMessage(&dm.Message, why)
	}, id: id}
	return dm, struct {
		io.Reader
		io.Closer
	}{cr, c}, nil
}

// Walk calls fn for each message with an id greater than after, in id
// order (which is arrival order to the second: ids start with their
// arrival time), until fn returns false. Unreadable records are
// quarantined and skipped.
func (q *Queue) Walk(after string, fn func(m *Message) bool) error {
	if err := q.enter(); err != nil {
		return err
	}
	defer q.leave()
	lower := []byte(pMsg)
	if after != "" {
		lower = append(msgKey(after), 0)
	}
	return q.scan(lower, []byte(pMsg[:1]+string(rune(pMsg[1]+1))), func(k, v []byte) bool {
		id := string(k[len(pMsg):])
		var dm diskMessage
		if err := json.Unmarshal(v, &dm); err != nil || dm.ID != id {
			go q.Quarantine(id, fmt.Sprintf("%v: m/%s does not decode", ErrCorrupt, id))
			return true
		}
		return fn(&dm.Message)
	})
}

// Messages returns every queued message's metadata, oldest first. It
// reads the whole queue: for tests and small queues.
func (q *Queue) Messages() []Message {
	var out []Message
	_ = q.Walk("", func(m *Message) bool { out = append(out, m.clone()); return true })
	slices.SortFunc(out, func(a, b Message) int { return CompareAge(&a, &b) })
	return out
}

// CompareAge orders messages oldest first, ties by ID: the order in which
// Messages lists them.
func CompareAge(a, b *Message) int {
	if c := a.ReceivedAt.Compare(b.ReceivedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// Due is a message in the due index.
type Due struct {
	ID string
	At time.Time // its NextAttempt; zero: due since it was queued
}

// DueBefore returns up to limit messages due at or before now, earliest
// first, starting after the entry from (zero Due: from the start); and
// when the first message after now falls due (zero: none). It reads only
// the entries it returns, plus one: the cost does not depend on the size
// of the queue.
func (q *Queue) DueBefore(now time.Time, from Due, limit int) ([]Due, time.Time, error) {
	if err := q.enter(); err != nil {
		return nil, time.Time{}, err
	}
	defer q.leave()
	var out []Due
	fromStart := from.ID == "" && from.At.IsZero()
	var first time.Time
	found := false
	if fromStart {
		// From the floor rather than the start (see dueFloor).
		q.dueFloor.scan.Lock()
		defer q.dueFloor.scan.Unlock()
		from.At = q.dueFloor.begin()
	}
	next, err := q.scanDue(pDue, now, from.At, from.ID, limit, func(at time.Time, id string, _ []byte) bool {
		if !found {
			first, found = at, true
		}
		if len(id) != idLength {
			return false
		}
		out = append(out, Due{ID: id, At: at})
		return true
	})
	if fromStart && err == nil {
		if !found && !next.IsZero() {
			first, found = next, true // nothing due yet: the first entry is next
		}
		q.dueFloor.end(first, found)
	}
	return out, next, err
}

// scanDue reads the time index under prefix from after (fromAt, fromID)
// (fromID "": from the start), passing entries due at or before now to
// add, which says whether it took one, until limit were taken. It returns
// when the first later entry falls due (now: more are due already; zero:
// none). The read is bounded by limit whatever the index's size.
func (q *Queue) scanDue(prefix string, now, fromAt time.Time, fromID string, limit int, add func(at time.Time, id string, v []byte) bool) (time.Time, error) {
	lower := []byte(prefix)
	switch {
	case fromID != "":
		lower = append(timeKey(prefix, fromAt, fromID), 0)
	case !fromAt.IsZero():
		lower = timeKey(prefix, fromAt, "") // everything at fromAt or later
	}
	end := dueTime(now)
	var next time.Time
	taken := 0
	err := q.scan(lower, upperOf(prefix), func(k, v []byte) bool {
		t, id, ok := parseTimeKey(prefix, k)
		if !ok {
			return true
		}
		if dueTime(t) > end {
			next = t
			return false
		}
		if taken == limit {
			next = now
			return false
		}
		if add(t, id, v) {
			taken++
		}
		return true
	})
	return next, err
}

// DueCount counts the messages due at or before now, reading at most max
// index entries (the count is then max).
func (q *Queue) DueCount(now time.Time, max int) int {
	n := 0
	end := dueTime(now)
	_ = q.scan([]byte(pDue), []byte("d0"), func(k, _ []byte) bool {
		if t, _, ok := parseDueKey(k); ok && dueTime(t) > end {
			return false
		}
		n++
		return n < max
	})
	return n
}

// ForDestination calls fn with the id of each message with a pending
// recipient in domain (lower-case), in id order, until fn returns false.
func (q *Queue) ForDestination(domain string, fn func(id string) bool) error {
	if err := q.enter(); err != nil {
		return err
	}
	defer q.leave()
	p := pDest + strings.ToLower(domain) + "/"
	return q.scan([]byte(p), []byte(p[:len(p)-1]+"0"), func(k, _ []byte) bool { return fn(string(k[len(p):])) })
}

// Oldest returns the arrival time of the oldest message (by id, which
// starts with the arrival second), or zero.
func (q *Queue) Oldest() time.Time {
	var t time.Time
	_ = q.Walk("", func(m *Message) bool { t = m.ReceivedAt; return false })
	return t
}

// scan iterates [lower, upper) calling fn until it returns false. When
// the iterator fails on corrupt data it is counted and logged, and the
// scan resumes past the bad region, so one bad block does not hide the
// rest of an index.
func (q *Queue) scan(lower, upper []byte, fn func(k, v []byte) bool) error {
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer func() {
		if it != nil {
			it.Close()
		}
	}()
	var last []byte
	for ok := it.First(); ; ok = it.Next() {
		if !ok {
			err := it.Error()
			if err == nil {
				return nil
			}
			if !pebble.IsCorruptionError(err) {
				return err
			}
			q.corruptions.Add(1)
			q.log.Error("queue: corrupt index data; skipping past it", "after_key", fmt.Sprintf("%q", last), "err", err)
			it.Close()
			if it, ok = q.resume(lower, upper, last); !ok {
				it = nil
				return nil
			}
		}
		k := it.Key()
		last = append(last[:0], k...)
		if !fn(k, it.Value()) {
			return nil
		}
	}
}

// resume finds the first readable key after last (the last good key, or
// nil) by seeking ever further ahead: one byte position at a time from
// the end of the key, the next possible prefix.
func (q *Queue) resume(lower, upper, last []byte) (*pebble.Iterator, bool) {
	base := last
	if base == nil {
		base = lower
	}
	for pos := len(base) - 1; pos >= 0; pos-- {
		if base[pos] == 0xff {
			continue
		}
		probe := append(bytes.Clone(base[:pos]), base[pos]+1)
		if bytes.Compare(probe, upper) >= 0 {
			continue
		}
		it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return nil, false
		}
		if it.SeekGE(probe) {
			return it, true
		}
		if it.Error() == nil {
			it.Close()
			return nil, false // nothing after the bad region
		}
		it.Close()
	}
	return nil, false
}

// FreeBytes returns the space available to unprivileged writers on the
// queue's filesystem.
func (q *Queue) FreeBytes() (free, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(q.dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// DiskBytes returns the bytes the spool occupies: the store and the body
// files.
func (q *Queue) DiskBytes() int64 {
	var n int64
	_ = filepath.WalkDir(q.dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Probe checks that the directory is writable by creating, fsyncing and
// removing a small file.
func (q *Queue) Probe() error {
	if err := q.Err(); err != nil {
		return err
	}
	f, err := os.CreateTemp(q.dir, ".probe-*")
	if err != nil {
		return classify(err)
	}
	name := f.Name()
	_, err = f.Write([]byte("ok\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return classify(err)
}

// newID returns a 16-character queue id: 32 bits of the arrival second
// then 48 random bits, base32hex, so ids sort by arrival and are safe as
// file names and in header fields.
func newID(at time.Time) string {
	var b [10]byte
	binary.BigEndian.PutUint32(b[:4], uint32(max(at.Unix(), 0)))
	_, _ = rand.Read(b[4:])
	return strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// pebbleLogger sends Pebble's reports to slog. Fatalf is Pebble giving up
// on a write it cannot undo (its commit pipeline is broken): the process
// must end, and recovery on restart replays the log.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error("pebble: fatal: " + fmt.Sprintf(format, args...))
	os.Exit(70)
}

// counterMerger sums little-endian int64 operands: message and held
// counts change inside the batches that add and remove messages, without
// a read.
var counterMerger = &pebble.Merger{
	Name: "mailroom.counter.v1",
	Merge: func(_, value []byte) (pebble.ValueMerger, error) {
		return &counter{n: decodeCount(value)}, nil
	},
}

type counter struct{ n int64 }

func (c *counter) MergeNewer(v []byte) error { c.n += decodeCount(v); return nil }
func (c *counter) MergeOlder(v []byte) error { c.n += decodeCount(v); return nil }
func (c *counter) Finish(bool) ([]byte, io.Closer, error) {
	return encodeCount(c.n), nil, nil
}

func encodeCount(n int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(n)) }

func decodeCount(v []byte) int64 {
	if len(v) != 8 {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(v))
}

// Scrubbed is closed once the check that runs after Open (scrub) is done.
// It reads every index entry and record at a tenth of a core, so at a
// million messages it runs for minutes; benchmarks wait for it before
// timing per-event costs, which it would otherwise share the disk with.
func (q *Queue) Scrubbed() <-chan struct{} { return q.scrubbed }

// Settle waits until the store has had no flush or compaction running
// for a second (after a bulk load, e.g. in benchmarks), or until ctx
// ends. (Pebble's compaction debt estimate need not reach zero: it only
// compacts levels whose score calls for it.)
func (q *Queue) Settle(ctx context.Context) error {
	quiet := 0
	for quiet < 10 {
		m := q.db.Metrics()
		if m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0 {
			quiet++
		} else {
			quiet = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// SyncedCommits returns how many batches were committed with Sync since
// Open (each waits for a WAL fsync, possibly shared with others).
func (q *Queue) SyncedCommits() int64 { return q.commits.Load() }

// WALSyncs returns how many times the store's write-ahead log was
// fsynced since Open. Commits that share an fsync (group commit) make it
// grow slower than the number of commits.
func (q *Queue) WALSyncs() uint64 {
	h := q.db.Metrics().LogWriter.FsyncLatency
	if h == nil {
		return 0
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram == nil {
		return 0
	}
	return m.Histogram.GetSampleCount()
}
