package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// ExportFormat is the version of Exported; a receiver refuses others.
const ExportFormat = 1

// Exported is one queued message as it is handed to another relay of the
// pool on scale-down: the envelope and every recipient's delivery state
// (attempts, last reply, DSN parameters), the message's attempt count,
// next attempt, delay-warned and held flags, its original arrival time
// and its retry deadline. It is plain JSON; the message bytes travel
// beside it (see Queue.Export).
type Exported struct {
	Format int `json:"format"`
	// Message is the sender's copy. Its ID is the sender's queue id; the
	// receiver assigns its own. Header is delivered before the body.
	Message Message `json:"message"`
	// BodySize is the length of the body reader's content (Message.Size
	// minus len(Message.Header)).
	BodySize int64 `json:"bodySize"`
}

// Export returns message id for handover: its metadata and a reader of
// the stored bytes (without Message.Header, which is in Exported). The
// caller closes the reader. The message stays queued until Remove.
func (q *Queue) Export(id string) (Exported, io.ReadCloser, error) {
	m, ok := q.Get(id)
	if !ok {
		return Exported{}, nil, ErrNotFound
	}
	rc, err := q.openStored(id)
	if err != nil {
		return Exported{}, nil, err
	}
	return Exported{Format: ExportFormat, Message: m, BodySize: m.Size - int64(len(m.Header))}, rc, nil
}

// ErrBadExport is returned by Import for an Exported it cannot take.
var ErrBadExport = errors.New("queue: invalid handover")

// Import queues a message handed over by another relay and returns its
// new queue id. It returns only once the message is durable (the same
// Sync commit as intake). It is idempotent on originKey (the sender's
// pool member and queue id, say): a second Import with the same key
// returns the first id with dup=true and queues nothing, so a crash
// between the receiver's commit and the sender's Remove never yields two
// copies. The body must hold exactly e.BodySize bytes.
func (q *Queue) Import(ctx context.Context, e Exported, body io.Reader, originKey string) (id string, dup bool, err error) {
	if e.Format != ExportFormat {
		return "", false, fmt.Errorf("%w: format %d, want %d", ErrBadExport, e.Format, ExportFormat)
	}
	if originKey == "" || len(originKey) > maxOriginKey {
		return "", false, fmt.Errorf("%w: origin key must be 1 to %d bytes", ErrBadExport, maxOriginKey)
	}
	if len(e.Message.Recipients) == 0 {
		return "", false, fmt.Errorf("%w: no recipients", ErrBadExport)
	}
	if e.BodySize < 0 || e.Message.Size != e.BodySize+int64(len(e.Message.Header)) {
		return "", false, fmt.Errorf("%w: size %d does not match body %d plus header", ErrBadExport, e.Message.Size, e.BodySize)
	}
	return q.importMessage(ctx, e, body, originKey)
}

// maxOriginKey bounds Import's idempotency keys.
const maxOriginKey = 512

// IDs returns up to limit queue ids greater than after, in id order: the
// drainer pages through the whole queue with it (after = the last id of
// the previous page, "" to start).
func (q *Queue) IDs(after string, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	return q.ids(after, limit)
}

// ctxReader stops a body copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// copyBody writes exactly n bytes of body to w.
func copyBody(ctx context.Context, w io.Writer, body io.Reader, n int64) error {
	got, err := io.Copy(w, io.LimitReader(ctxReader{ctx, body}, n))
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("%w: body has %d bytes, want %d", ErrBadExport, got, n)
	}
	// Anything beyond n is a sender bug; refuse rather than truncate.
	var one [1]byte
	if k, _ := io.ReadFull(ctxReader{ctx, body}, one[:]); k > 0 {
		return fmt.Errorf("%w: body longer than %d bytes", ErrBadExport, n)
	}
	return nil
}

// importMessage is Import after validation. The idempotency check and the
// commit are one critical section, and the key i/<originKey> is written in
// the same batch as the message, so two Imports of one key can never both
// queue, before or after a crash.
func (q *Queue) importMessage(ctx context.Context, e Exported, body io.Reader, originKey string) (string, bool, error) {
	q.importMu.Lock()
	defer q.importMu.Unlock()
	if id, ok := q.handedOver(originKey); ok {
		return id, true, nil
	}
	// The id starts with the original arrival second, like the sender's.
	w, err := q.newWriter(classIntake, e.Message.ReceivedAt)
	if err != nil {
		return "", false, err
	}
	if err := copyBody(ctx, w, body, e.BodySize); err != nil {
		w.Abort()
		return "", false, err
	}
	if err := ctx.Err(); err != nil {
		w.Abort()
		return "", false, err
	}
	m := e.Message.clone()
	m.Handover = originKey
	m.LeaseUntil = time.Time{} // the sender's attempt ended with its queue
	v, _ := json.Marshal(idemRecord{ID: w.ID(), At: q.opts.Now().UTC()})
	w.extra = func(b *pebble.Batch) error { return b.Set([]byte(pIdem+originKey), v, nil) }
	if err := w.Commit(m); err != nil {
		return "", false, err
	}
	return w.ID(), false, nil
}

// idemRecord is the value of i/<originKey>.
type idemRecord struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// idemTTL is how long Import remembers a key: far longer than any
// handover retry.
const idemTTL = 30 * 24 * time.Hour

// handedOver returns the id of the message imported with key.
func (q *Queue) handedOver(key string) (string, bool) {
	v, closer, err := q.db.Get([]byte(pIdem + key))
	if err != nil {
		return "", false
	}
	defer closer.Close()
	var r idemRecord
	if json.Unmarshal(v, &r) != nil {
		return "", false
	}
	return r.ID, true
}

func (q *Queue) pruneIdempotencyKeys() {
	cut := q.opts.Now().Add(-idemTTL)
	var old [][]byte
	_ = q.scan([]byte(pIdem), []byte("i0"), func(k, v []byte) bool {
		var r idemRecord
		if json.Unmarshal(v, &r) == nil && r.At.Before(cut) {
			old = append(old, append([]byte(nil), k...))
		}
		return len(old) < 10000
	})
	for _, k := range old {
		_ = q.db.Delete(k, pebble.NoSync)
	}
}

// openStored returns the stored bytes of id, without Message.Header.
func (q *Queue) openStored(id string) (io.ReadCloser, error) {
	_, rc, err := q.openBody(id)
	return rc, err
}

// ids lists queue ids after after, in order.
func (q *Queue) ids(after string, limit int) ([]string, error) {
	if err := q.enter(); err != nil {
		return nil, err
	}
	defer q.leave()
	lower := []byte(pMsg)
	if after != "" {
		lower = append(msgKey(after), 0)
	}
	var out []string
	err := q.scan(lower, []byte("m0"), func(k, _ []byte) bool {
		out = append(out, string(k[len(pMsg):]))
		return len(out) < limit
	})
	return out, err
}
