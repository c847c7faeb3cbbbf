package queue

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrLocked is returned by Open when another process owns the directory.
	ErrLocked = errors.New("queue directory is in use by another process")
	// ErrNoSpace wraps write failures caused by a full disk or quota.
	ErrNoSpace = errors.New("queue: no space left on device")
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("queue: closed")
	// ErrNotFound is returned for an unknown message id.
	ErrNotFound = errors.New("queue: no such message")
)

// Message is a queued message's metadata: its envelope and delivery state.
// It is what the MESSAGE and UPDATE records hold.
type Message struct {
	ID         string      `json:"id"`
	From       string      `json:"from"` // envelope sender; "" is the null sender
	Recipients []Recipient `json:"rcpts"`
	ReceivedAt time.Time   `json:"received"`
	// Size is the length of the message as delivered: Header plus the
	// stored bytes.
	Size int64 `json:"size"`
	// Origin says who submitted the message: "user:<name>" or
	// "network:<name>".
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

	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next,omitempty"`
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

func (m Message) clone() Message {
	m.Recipients = slices.Clone(m.Recipients)
	m.History = slices.Clone(m.History)
	for i := range m.Recipients {
		m.Recipients[i].Notify = slices.Clone(m.Recipients[i].Notify)
	}
	return m
}

// Options tune a Queue. Zero values mean the defaults.
type Options struct {
	// SegmentSize is the size after which a new segment is started.
	// Default 64 MiB.
	SegmentSize int64
	// InlineLimit is the largest message kept in memory and written into
	// the segment itself; larger ones stream to their own body file.
	// Default 128 KiB.
	InlineLimit int
	// MaxBatch bounds how many commits share one write and fsync.
	// Default 256.
	MaxBatch int
	// Logger receives recovery and failure reports. Default slog.Default().
	Logger *slog.Logger
	// OnCommit, if set, is called after each durable batch with the time the
	// write and fsyncs took and the number of records in the batch.
	OnCommit func(d time.Duration, records int)
}

// RecoveryStats describes what Open found.
type RecoveryStats struct {
	Segments       int
	Messages       int   // live messages recovered
	TornBytes      int64 // bytes of incomplete records cut off
	OrphanBodies   int   // body files without a committed message, deleted
	MissingBodies  int   // committed spilled messages whose body file was gone
	TornSegments   int   // segments that had a torn tail
	RemovedHeaders int   // segments without a complete header, removed
}

type entry struct {
	msg     Message
	seg     uint64
	off     int64 // of the inline body within the segment file
	n       int64 // inline body length
	spilled bool
}

// Queue is an open queue directory. Its methods are safe for concurrent use.
type Queue struct {
	dir, segDir, bodyDir string
	opts                 Options
	log                  *slog.Logger
	lock                 *os.File

	reqs     chan *request
	added    chan struct{} // signalled (coalesced) when a message is committed
	loopDone chan struct{}
	inflight sync.WaitGroup

	importMu sync.Mutex // serialises Import's check and commit

	mu       sync.Mutex
	closed   bool
	failed   error
	index    map[string]*entry
	live     map[uint64]int // live MESSAGE records per segment
	total    map[uint64]int // MESSAGE records ever written per segment
	segs     []uint64       // existing segments, oldest first
	recovery RecoveryStats

	// Owned by the commit loop.
	active     *os.File
	activeSeq  uint64
	activeSize int64
	wbuf       []byte
}

// request is one record waiting for the commit loop.
type request struct {
	rec     []byte
	spilled bool // a body file was created: fsync bodies/ first
	// apply updates the index once the record is durable; it runs with
	// q.mu held. off is the record's offset in segment seg.
	apply func(seg uint64, off int64)
	done  chan error
}

// Open locks dir (creating it if needed), recovers its contents and starts
// the commit loop.
func Open(dir string, opts Options) (*Queue, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 64 << 20
	}
	if opts.InlineLimit <= 0 {
		opts.InlineLimit = 128 << 10
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	q := &Queue{
		dir:     dir,
		segDir:  filepath.Join(dir, "segments"),
		bodyDir: filepath.Join(dir, "bodies"),
		opts:    opts,
		log:     opts.Logger,
		index:   make(map[string]*entry),
		live:    make(map[uint64]int),
		total:   make(map[uint64]int),
		added:   make(chan struct{}, 1),
	}
	for _, d := range []string{dir, q.segDir, q.bodyDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	// The directories' own entries must be durable before anything in them
	// is acknowledged (a freshly created spool on first start).
	for _, d := range []string{filepath.Dir(filepath.Clean(dir)), dir} {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	if err := q.takeLock(); err != nil {
		return nil, err
	}
	if err := q.recover(); err != nil {
		q.lock.Close()
		return nil, err
	}
	q.reqs = make(chan *request, opts.MaxBatch)
	q.loopDone = make(chan struct{})
	go q.commitLoop()
	return q, nil
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

// recover rebuilds the index from the segments, cuts off torn tails and
// deletes unreferenced body files.
func (q *Queue) recover() error {
	names, err := os.ReadDir(q.segDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	for _, de := range names {
		name := de.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 16, 64)
		if err != nil {
			return fmt.Errorf("queue: unexpected file %s in %s", name, q.segDir)
		}
		q.segs = append(q.segs, seq)
	}
	slices.Sort(q.segs)

	kept := q.segs[:0]
	for _, seq := range q.segs {
		ok, err := q.recoverSegment(seq)
		if err != nil {
			return err
		}
		if ok {
			kept = append(kept, seq)
		}
	}
	q.segs = kept
	q.recovery.Segments = len(q.segs)

	bodies, err := os.ReadDir(q.bodyDir)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	for _, de := range bodies {
		if e, ok := q.index[de.Name()]; ok && e.spilled {
			continue
		}
		if err := os.Remove(filepath.Join(q.bodyDir, de.Name())); err != nil {
			return fmt.Errorf("queue: remove orphan body: %w", err)
		}
		q.recovery.OrphanBodies++
	}
	for id, e := range q.index {
		if !e.spilled {
			continue
		}
		if _, err := os.Stat(filepath.Join(q.bodyDir, id)); err != nil {
			// Cannot happen unless someone deleted files by hand; say so
			// loudly rather than keep a message that can never be sent.
			q.log.Error("queue: body file of a committed message is missing; message dropped", "queue_id", id, "err", err)
			q.forget(id)
			q.recovery.MissingBodies++
		}
	}
	q.recovery.Messages = len(q.index)

	if len(q.segs) > 0 {
		last := q.segs[len(q.segs)-1]
		f, err := os.OpenFile(q.segPath(last), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("queue: %w", err)
		}
		q.active, q.activeSeq, q.activeSize = f, last, st.Size()
		q.live[last] += 0
	} else if err := q.newSegment(1); err != nil {
		return err
	}
	if q.recovery.TornBytes > 0 || q.recovery.OrphanBodies > 0 {
		q.log.Warn("queue: discarded incomplete writes during recovery",
			"torn_bytes", q.recovery.TornBytes, "torn_segments", q.recovery.TornSegments,
			"orphan_bodies", q.recovery.OrphanBodies)
	}
	q.log.Info("queue: opened", "dir", q.dir, "messages", len(q.index), "segments", len(q.segs))
	return nil
}

// recoverSegment applies one segment's records. It returns false if the
// segment had no complete header (a crash while creating it) and was
// removed.
func (q *Queue) recoverSegment(seq uint64) (bool, error) {
	path := q.segPath(seq)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("queue: %w", err)
	}
	defer f.Close()
	var h [segHeaderLen]byte
	if n, err := io.ReadFull(f, h[:]); err != nil {
		if n < segHeaderLen && (err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)) && bytes.HasPrefix([]byte(segMagic), h[:min(n, len(segMagic))]) {
			f.Close()
			if err := os.Remove(path); err != nil {
				return false, fmt.Errorf("queue: %w", err)
			}
			q.recovery.RemovedHeaders++
			return false, nil
		}
		return false, fmt.Errorf("queue: segment %s: %v", path, err)
	}
	if string(h[:8]) != segMagic {
		return false, fmt.Errorf("queue: %s is not a mailroom queue segment (bad magic)", path)
	}

	rr := &recordReader{r: bufio.NewReaderSize(f, 256<<10), off: segHeaderLen}
	for {
		rec, err := rr.next()
		if err == io.EOF {
			return true, nil
		}
		if err == errTorn {
			st, serr := f.Stat()
			if serr != nil {
				return false, fmt.Errorf("queue: %w", serr)
			}
			if err := f.Truncate(rr.off); err != nil {
				return false, fmt.Errorf("queue: cut torn tail of %s: %w", path, err)
			}
			if err := f.Sync(); err != nil {
				return false, fmt.Errorf("queue: %w", err)
			}
			q.recovery.TornBytes += st.Size() - rr.off
			q.recovery.TornSegments++
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("queue: read %s: %w", path, err)
		}
		if err := q.replay(seq, rec); err != nil {
			return false, fmt.Errorf("queue: %s at offset %d: %w", path, rec.off, err)
		}
	}
}

func (q *Queue) replay(seq uint64, rec record) error {
	switch rec.typ {
	case recMessage:
		dm, bodyOff, bodyLen, err := decodeMessage(rec.payload)
		if err != nil {
			return err
		}
		q.forget(dm.ID)
		e := &entry{msg: dm.Message, seg: seq, spilled: dm.Spilled}
		if !dm.Spilled {
			e.off = rec.off + recHeaderLen + bodyOff
			e.n = bodyLen
		}
		q.index[dm.ID] = e
		q.live[seq]++
		q.total[seq]++
	case recUpdate:
		var m Message
		if err := json.Unmarshal(rec.payload, &m); err != nil {
			return fmt.Errorf("update record: %w", err)
		}
		if e, ok := q.index[m.ID]; ok {
			e.msg = m
		}
	case recDone:
		q.forget(string(rec.payload))
	}
	return nil
}

// forget drops id from the index; q.mu is held or the queue is not yet
// shared.
func (q *Queue) forget(id string) *entry {
	e, ok := q.index[id]
	if !ok {
		return nil
	}
	delete(q.index, id)
	q.live[e.seg]--
	return e
}

func (q *Queue) segPath(seq uint64) string {
	return filepath.Join(q.segDir, fmt.Sprintf("%016x.seg", seq))
}

// newSegment creates segment seq, makes its existence durable and makes it
// the active one.
func (q *Queue) newSegment(seq uint64) error {
	path := q.segPath(seq)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	var h [segHeaderLen]byte
	copy(h[:], segMagic)
	putUint64(h[8:], seq)
	if _, err := f.Write(h[:]); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(q.segDir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return classify(fmt.Errorf("queue: create segment: %w", err))
	}
	if q.active != nil {
		q.active.Close()
	}
	q.active, q.activeSeq, q.activeSize = f, seq, segHeaderLen
	q.mu.Lock()
	q.segs = append(q.segs, seq)
	q.live[seq] += 0
	q.mu.Unlock()
	return nil
}

func putUint64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
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

// commitLoop is the group commit: it takes every request that is waiting,
// writes them with one write and one fsync, and answers them all.
func (q *Queue) commitLoop() {
	defer close(q.loopDone)
	batch := make([]*request, 0, q.opts.MaxBatch)
	for {
		r, ok := <-q.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], r)
	drain:
		for len(batch) < q.opts.MaxBatch {
			select {
			case r, ok := <-q.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		q.commitBatch(batch)
		q.compact()
	}
}

func (q *Queue) commitBatch(batch []*request) {
	start := time.Now()
	base := q.activeSize
	buf := q.wbuf[:0]
	offs := make([]int64, len(batch))
	dirSync := false
	for i, r := range batch {
		offs[i] = base + int64(len(buf))
		buf = append(buf, r.rec...)
		dirSync = dirSync || r.spilled
	}
	if cap(buf) <= 4<<20 {
		q.wbuf = buf
	} else {
		q.wbuf = nil
	}

	var err error
	if dirSync {
		// Body files were fsynced by their writers; their directory entries
		// must be durable before a record refers to them.
		err = syncDir(q.bodyDir)
	}
	if err == nil {
		_, err = q.active.WriteAt(buf, base)
	}
	if err == nil {
		err = unix.Fdatasync(int(q.active.Fd()))
	}
	if err != nil {
		err = classify(fmt.Errorf("queue: write: %w", err))
		// Whatever part of the batch reached the file must go before the
		// next batch is appended, or recovery would stop at this torn
		// record and never see the good ones after it.
		if terr := q.active.Truncate(base); terr != nil {
			q.setFailed(fmt.Errorf("queue: cannot undo a failed write (%v): %w", err, terr))
		} else if serr := unix.Fsync(int(q.active.Fd())); serr != nil {
			q.setFailed(fmt.Errorf("queue: cannot undo a failed write (%v): %w", err, serr))
		}
		q.log.Error("queue: commit failed", "records", len(batch), "err", err)
		for _, r := range batch {
			r.done <- err
		}
		return
	}
	q.activeSize = base + int64(len(buf))
	if q.opts.OnCommit != nil {
		q.opts.OnCommit(time.Since(start), len(batch))
	}

	q.mu.Lock()
	for i, r := range batch {
		if r.apply != nil {
			r.apply(q.activeSeq, offs[i])
		}
	}
	q.mu.Unlock()
	for _, r := range batch {
		r.done <- nil
	}

	if q.activeSize >= q.opts.SegmentSize {
		if err := q.newSegment(q.activeSeq + 1); err != nil {
			// The current segment stays active and grows; try again after
			// the next batch.
			q.log.Error("queue: cannot start a new segment", "err", err)
		}
	}
	q.collect()
}

// collect deletes the oldest segments while they hold no live message.
func (q *Queue) collect() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.segs) > 1 && q.segs[0] != q.activeSeq && q.live[q.segs[0]] <= 0 {
		seq := q.segs[0]
		if err := os.Remove(q.segPath(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			q.log.Error("queue: remove segment", "segment", seq, "err", err)
			return
		}
		// Deletions must become durable in order; see the package doc.
		if err := syncDir(q.segDir); err != nil {
			q.log.Error("queue: sync segment directory", "err", err)
			return
		}
		q.segs = q.segs[1:]
		delete(q.live, seq)
		delete(q.total, seq)
	}
}

// compactBytes bounds the inline bodies copied by one compaction step.
const compactBytes = 8 << 20

// compact rewrites the live messages of the oldest segment into the active
// one once at least three quarters of that segment's messages are finished,
// so a few messages retrying for days do not keep every later segment on
// disk. A rewrite is a new MESSAGE record with the same id and current
// state (see the package doc); once it is durable the old segment holds
// nothing live and collect deletes it. It runs in the commit loop, the only
// place the index changes, so the entries cannot change underneath it.
func (q *Queue) compact() {
	q.mu.Lock()
	if len(q.segs) < 2 || q.segs[0] == q.activeSeq {
		q.mu.Unlock()
		return
	}
	oldest := q.segs[0]
	if live := q.live[oldest]; live == 0 || live*4 > q.total[oldest] {
		q.mu.Unlock()
		return
	}
	var moving []entry
	var bytes int64
	for _, e := range q.index {
		if e.seg == oldest && bytes < compactBytes {
			moving = append(moving, entry{msg: e.msg.clone(), seg: e.seg, off: e.off, n: e.n, spilled: e.spilled})
			bytes += e.n
		}
	}
	q.mu.Unlock()

	f, err := os.Open(q.segPath(oldest))
	if err != nil {
		q.log.Error("queue: compaction: open segment", "err", err)
		return
	}
	defer f.Close()
	reqs := make([]*request, 0, len(moving))
	for _, e := range moving {
		var body []byte
		if !e.spilled {
			body = make([]byte, e.n)
			if _, err := f.ReadAt(body, e.off); err != nil {
				q.log.Error("queue: compaction: read", "queue_id", e.msg.ID, "err", err)
				return
			}
		}
		rec, bodyOff, err := encodeMessage(diskMessage{Message: e.msg, Spilled: e.spilled}, body)
		if err != nil {
			q.log.Error("queue: compaction: encode", "queue_id", e.msg.ID, "err", err)
			return
		}
		id, spilled := e.msg.ID, e.spilled
		reqs = append(reqs, &request{rec: rec, done: make(chan error, 1), apply: func(seg uint64, off int64) {
			cur, ok := q.index[id]
			if !ok {
				return
			}
			q.live[cur.seg]--
			cur.seg = seg
			if !spilled {
				cur.off = off + bodyOff
			}
			q.live[seg]++
			q.total[seg]++
		}})
	}
	q.commitBatch(reqs)
	if err := <-reqs[0].done; err != nil {
		q.log.Error("queue: compaction: write", "err", err)
		return
	}
	q.log.Info("queue: compacted segment", "segment", oldest, "moved", len(reqs))
}

func (q *Queue) setFailed(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failed == nil {
		q.failed = err
		q.log.Error("queue: failed; refusing further writes", "err", err)
	}
}

// submit hands r to the commit loop and waits until it is durable.
func (q *Queue) submit(r *request) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if q.failed != nil {
		err := q.failed
		q.mu.Unlock()
		return err
	}
	q.inflight.Add(1)
	q.mu.Unlock()
	defer q.inflight.Done()
	r.done = make(chan error, 1)
	q.reqs <- r
	return <-r.done
}

// Close waits for commits in progress, then releases the directory.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	q.closed = true
	q.mu.Unlock()
	q.inflight.Wait()
	close(q.reqs)
	<-q.loopDone
	err := q.active.Sync()
	if cerr := q.active.Close(); err == nil {
		err = cerr
	}
	if cerr := q.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// Err reports a failure that stops the queue from accepting writes (an
// fsync or truncate error it could not undo), or nil.
func (q *Queue) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	return q.failed
}

// Recovery returns what Open found and repaired.
func (q *Queue) Recovery() RecoveryStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.recovery
}

// Dir returns the queue directory.
func (q *Queue) Dir() string { return q.dir }

// Len returns the number of messages in the queue.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.index)
}

// Messages returns a snapshot of every queued message's metadata, oldest
// first.
func (q *Queue) Messages() []Message {
	q.mu.Lock()
	out := make([]Message, 0, len(q.index))
	for _, e := range q.index {
		out = append(out, e.msg.clone())
	}
	q.mu.Unlock()
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

// Select returns copies of the messages for which match returns true, in
// no particular order. match sees each message under the queue's lock and
// must not keep or modify it; it is how the scheduler finds due messages
// without copying the whole queue on every pass.
func (q *Queue) Select(match func(m *Message) bool) []Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Message
	for _, e := range q.index {
		if match(&e.msg) {
			out = append(out, e.msg.clone())
		}
	}
	return out
}

// Added is signalled after a new message has been committed. Signals are
// coalesced: one receive may stand for many messages.
func (q *Queue) Added() <-chan struct{} { return q.added }

// Get returns one message's metadata.
func (q *Queue) Get(id string) (Message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.index[id]
	if !ok {
		return Message{}, false
	}
	return e.msg.clone(), true
}

// Open returns the message's bytes as they are to be delivered: Header
// followed by the stored data.
func (q *Queue) Open(id string) (io.ReadCloser, error) {
	q.mu.Lock()
	e, ok := q.index[id]
	var cp entry
	if ok {
		cp = *e
	}
	q.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	var f *os.File
	var err error
	var body io.Reader
	if cp.spilled {
		f, err = os.Open(filepath.Join(q.bodyDir, id))
		body = f
	} else {
		// A segment is only deleted when it holds no live message, and an
		// open file stays readable after deletion.
		f, err = os.Open(q.segPath(cp.seg))
		if err == nil {
			body = io.NewSectionReader(f, cp.off, cp.n)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("queue: open %s: %w", id, err)
	}
	return &messageReader{Reader: io.MultiReader(strings.NewReader(cp.msg.Header), body), f: f}, nil
}

// openStored returns the stored bytes of id, without Message.Header.
func (q *Queue) openStored(id string) (io.ReadCloser, error) {
	m, ok := q.Get(id)
	if !ok {
		return nil, ErrNotFound
	}
	rc, err := q.Open(id)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, int64(len(m.Header))); err != nil {
		rc.Close()
		return nil, fmt.Errorf("queue: open %s: %w", id, err)
	}
	return rc, nil
}

// ids lists queue ids after after, in order.
func (q *Queue) ids(after string, limit int) ([]string, error) {
	q.mu.Lock()
	var all []string
	for id := range q.index {
		if id > after {
			all = append(all, id)
		}
	}
	q.mu.Unlock()
	slices.Sort(all)
	if len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

// handedOver returns the id of the message imported with key.
func (q *Queue) handedOver(key string) (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, e := range q.index {
		if e.msg.Handover == key {
			return id, true
		}
	}
	return "", false
}

type messageReader struct {
	io.Reader
	f *os.File
}

func (m *messageReader) Close() error { return m.f.Close() }

// Update durably replaces a message's metadata (recipient states, attempts,
// next attempt). The id and the stored bytes cannot change.
func (q *Queue) Update(m Message) error {
	q.mu.Lock()
	e, ok := q.index[m.ID]
	if ok {
		// Fields fixed at submission stay as they were.
		m.Header, m.Size = e.msg.Header, e.msg.Size
	}
	q.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	m = m.clone()
	rec, err := encodeUpdate(m)
	if err != nil {
		return err
	}
	return q.submit(&request{rec: rec, apply: func(uint64, int64) {
		if e, ok := q.index[m.ID]; ok {
			e.msg = m
		}
	}})
}

// Remove durably forgets a finished message and frees its storage.
func (q *Queue) Remove(id string) error {
	q.mu.Lock()
	_, ok := q.index[id]
	q.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	var spilled bool
	err := q.submit(&request{rec: encodeDone(id), apply: func(uint64, int64) {
		if e := q.forget(id); e != nil {
			spilled = e.spilled
		}
	}})
	if err == nil && spilled {
		// Not fsynced: a body file that reappears after a crash has no
		// message any more and is deleted by recovery.
		_ = os.Remove(filepath.Join(q.bodyDir, id))
	}
	return err
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

// newID returns a random 16-character queue id: 80 bits, never reused in
// practice, safe as a file name and in a header field.
func newID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
