package queue

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Writer receives one message's bytes. Small messages stay in memory and
// go into the store with their metadata in one batch; once a message grows
// past Options.InlineLimit it streams to its own body file, so memory use
// per message is bounded whatever its size.
//
// A Writer is used by one goroutine. Exactly one of Commit or Abort must be
// called.
type Writer struct {
	q       *Queue
	id      string
	class   class
	buf     bytes.Buffer
	f       *os.File
	bw      *bufio.Writer
	size    int64
	crc     uint32
	checked int64 // size at the last free-space check
	err     error
	done    bool
	// committed: Commit made the message durable.
	committed bool
	// extra adds to the message's batch (Import's idempotency key).
	extra func(b *pebble.Batch) error
}

// NewWriter starts a new message from intake. Its queue id is fixed now,
// so it can appear in logs and trace headers before the message is
// committed. Intake writers have the largest free-space reserve: they are
// refused first.
func (q *Queue) NewWriter() (*Writer, error) { return q.newWriter(classIntake, q.opts.Now()) }

// NewReportWriter starts a delivery status notification about mail
// already accepted. It may use space intake may not (see Options.Reserve).
func (q *Queue) NewReportWriter() (*Writer, error) { return q.newWriter(classReport, q.opts.Now()) }

func (q *Queue) newWriter(c class, at time.Time) (*Writer, error) {
	if err := q.Err(); err != nil {
		return nil, err
	}
	return &Writer{q: q, id: newID(at), class: c}, nil
}

// ID returns the queue id the message will have.
func (w *Writer) ID() string { return w.id }

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return w.size }

// spaceCheckEvery is how often a streaming body checks the reserve, so a
// huge message is refused before it eats into the space of accepted mail.
const spaceCheckEvery = 1 << 20

// Write appends message bytes.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.f == nil && w.buf.Len()+len(p) > w.q.opts.InlineLimit {
		if err := w.spill(); err != nil {
			w.err = err
			return 0, err
		}
	}
	if w.f != nil && w.size+int64(len(p))-w.checked >= spaceCheckEvery {
		release, err := w.q.claim(w.class, int64(len(p)))
		if err != nil {
			w.err = err
			return 0, err
		}
		release()
		w.checked = w.size
	}
	var n int
	var err error
	if w.f != nil {
		n, err = w.bw.Write(p)
	} else {
		n, err = w.buf.Write(p)
	}
	w.crc = crc32.Update(w.crc, crcTable, p[:n])
	w.size += int64(n)
	if err != nil {
		w.err = classify(fmt.Errorf("queue: write body: %w", err))
		return n, w.err
	}
	return n, nil
}

func (w *Writer) spill() error {
	f, err := os.OpenFile(filepath.Join(w.q.bodyDir, w.id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return classify(fmt.Errorf("queue: create body file: %w", err))
	}
	w.f = f
	w.bw = bufio.NewWriterSize(f, 64<<10)
	if _, err := w.bw.Write(w.buf.Bytes()); err != nil {
		return classify(fmt.Errorf("queue: write body: %w", err))
	}
	w.buf = bytes.Buffer{}
	return nil
}

// Commit makes the message durable and returns only once it is: after it
// returns nil the message survives a crash and may be acknowledged. m's ID
// and Size are set by Commit; ReceivedAt defaults to now. On error nothing
// of the message remains.
//
// also are written in the same batch, so they become durable exactly when
// the message does (an API idempotency answer, the queued event).
func (w *Writer) Commit(m Message, also ...Record) error {
	if w.done {
		return fmt.Errorf("queue: writer already finished")
	}
	w.done = true
	if w.err != nil {
		w.cleanup()
		return w.err
	}
	q := w.q
	if err := q.enter(); err != nil {
		w.cleanup()
		return err
	}
	defer q.leave()
	m.ID = w.id
	m.Size = w.size + int64(len(m.Header))
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = q.opts.Now().UTC()
	}
	dm := diskMessage{Message: m.clone(), File: w.f != nil, BodyLen: w.size, BodyCRC: w.crc}
	if w.f != nil {
		// The body file and its directory entry are durable before the
		// batch that refers to them.
		err := w.bw.Flush()
		if err == nil {
			err = w.f.Sync()
		}
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
		w.f = nil
		if err == nil {
			err = syncDir(q.bodyDir)
		}
		if err != nil {
			os.Remove(filepath.Join(q.bodyDir, w.id))
			return classify(fmt.Errorf("queue: write body: %w", err))
		}
	}
	if w.class == classIntake {
		if hook := q.intakeHook.Load(); hook != nil {
			if admitted := (*hook)(&dm.Message); admitted != nil {
				defer func() { admitted(w.committed) }()
			}
		}
	}
	b := q.db.NewBatch()
	defer b.Close()
	if !dm.File {
		if err := b.Set(bodyKey(w.id), w.buf.Bytes(), nil); err != nil {
			return err
		}
	}
	if err := putMessage(b, dm, nil); err != nil {
		w.cleanup()
		return err
	}
	if w.extra != nil {
		if err := w.extra(b); err != nil {
			w.cleanup()
			return err
		}
	}
	if err := putRecords(b, also); err != nil {
		w.cleanup()
		return err
	}
	w.buf = bytes.Buffer{}
	err := q.commit(b, w.class, 0)
	q.noteDue(&dm.Message)
	if err != nil {
		if dm.File {
			os.Remove(filepath.Join(q.bodyDir, w.id))
		}
		return err
	}
	w.committed = true
	q.signalAdded()
	return nil
}

// IntakeHook is called by an intake Commit with the message about to be
// written, which it may change (the scheduler writes the first attempt's
// lease into it). If it returns a function, that is called with whether
// the commit succeeded, after it returned.
type IntakeHook func(m *Message) func(committed bool)

// SetIntakeHook sets (nil: removes) the intake hook.
func (q *Queue) SetIntakeHook(h IntakeHook) {
	if h == nil {
		q.intakeHook.Store(nil)
		return
	}
	q.intakeHook.Store(&h)
}

// Abort discards the message. It is safe to call after Commit.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.cleanup()
}

func (w *Writer) cleanup() {
	w.buf = bytes.Buffer{}
	if w.f != nil {
		w.f.Close()
		w.f = nil
		os.Remove(filepath.Join(w.q.bodyDir, w.id))
	}
}
