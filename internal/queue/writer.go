package queue

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Writer receives one message's bytes. Small messages stay in memory and go
// into the segment with their metadata; once a message grows past
// Options.InlineLimit it streams to its own body file, so memory use per
// message is bounded whatever its size.
//
// A Writer is used by one goroutine. Exactly one of Commit or Abort must be
// called.
type Writer struct {
	q    *Queue
	id   string
	buf  bytes.Buffer
	f    *os.File
	bw   *bufio.Writer
	size int64
	err  error
	done bool
}

// NewWriter starts a message. Its queue id is fixed now, so it can appear in
// logs and trace headers before the message is committed.
func (q *Queue) NewWriter() (*Writer, error) {
	if err := q.Err(); err != nil {
		return nil, err
	}
	return &Writer{q: q, id: newID()}, nil
}

// ID returns the queue id the message will have.
func (w *Writer) ID() string { return w.id }

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return w.size }

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
	var n int
	var err error
	if w.f != nil {
		n, err = w.bw.Write(p)
	} else {
		n, err = w.buf.Write(p)
	}
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
func (w *Writer) Commit(m Message) error {
	if w.done {
		return fmt.Errorf("queue: writer already finished")
	}
	w.done = true
	if w.err != nil {
		w.cleanup()
		return w.err
	}
	m.ID = w.id
	m.Size = w.size + int64(len(m.Header))
	if m.ReceivedAt.IsZero() {
		m.ReceivedAt = time.Now().UTC()
	}
	m = m.clone()

	dm := diskMessage{Message: m, Spilled: w.f != nil}
	var body []byte
	if w.f != nil {
		err := w.bw.Flush()
		if err == nil {
			err = w.f.Sync()
		}
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
		w.f = nil
		if err != nil {
			os.Remove(filepath.Join(w.q.bodyDir, w.id))
			return classify(fmt.Errorf("queue: write body: %w", err))
		}
	} else {
		body = w.buf.Bytes()
	}
	rec, bodyOff, err := encodeMessage(dm, body)
	if err != nil {
		w.cleanup()
		return err
	}
	n := int64(len(body))
	w.buf = bytes.Buffer{}
	err = w.q.submit(&request{rec: rec, spilled: dm.Spilled, apply: func(seg uint64, off int64) {
		w.q.forget(m.ID)
		e := &entry{msg: m, seg: seg, spilled: dm.Spilled}
		if !dm.Spilled {
			e.off, e.n = off+bodyOff, n
		}
		w.q.index[m.ID] = e
		w.q.live[seg]++
		w.q.total[seg]++
		select {
		case w.q.added <- struct{}{}:
		default:
		}
	}})
	if err != nil && dm.Spilled {
		os.Remove(filepath.Join(w.q.bodyDir, w.id))
	}
	return err
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
