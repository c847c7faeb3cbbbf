package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/dsn"
	"mailroom.io/mailroom/internal/queue"
)

// MessageInfo is a queued message as the admin interface shows it.
type MessageInfo struct {
	queue.Message
	State string `json:"state"` // active, deferred, held
}

// Filter selects messages for List; empty fields match everything.
type Filter struct {
	State string
	// Domain matches messages with a pending recipient in it (read from
	// the destination index).
	Domain string
	// After and Limit page through the queue: messages with an id greater
	// than After, at most Limit (0: all).
	After string
	Limit int
}

// List returns the queued messages matching f, oldest first.
func (s *Scheduler) List(f Filter) []MessageInfo {
	now := s.opts.Now()
	domain := strings.ToLower(strings.TrimPrefix(f.Domain, "@"))
	var out []MessageInfo
	take := func(m *queue.Message) bool {
		s.mu.Lock()
		st := messageState(m, s.inflight[m.ID], now)
		s.mu.Unlock()
		if f.State == "" || st == f.State {
			out = append(out, MessageInfo{Message: *m, State: st})
		}
		return f.Limit <= 0 || len(out) < f.Limit
	}
	if domain != "" {
		_ = s.q.ForDestination(domain, func(id string) bool {
			if id <= f.After {
				return true
			}
			m, ok := s.q.Get(id)
			if !ok {
				return true
			}
			return take(&m)
		})
	} else {
		_ = s.q.Walk(f.After, take)
	}
	slices.SortFunc(out, func(a, b MessageInfo) int { return queue.CompareAge(&a.Message, &b.Message) })
	return out
}

// Get returns one message with its state.
func (s *Scheduler) Get(id string) (MessageInfo, error) {
	m, ok := s.q.Get(id)
	if !ok {
		return MessageInfo{}, queue.ErrNotFound
	}
	s.mu.Lock()
	st := messageState(&m, s.inflight[id], s.opts.Now())
	s.mu.Unlock()
	return MessageInfo{Message: m, State: st}, nil
}

// Quarantined lists the messages set aside as unreadable.
func (s *Scheduler) Quarantined() []queue.Quarantined { return s.q.QuarantineList() }

// change applies fn to the current copy of message id under its lock and
// saves the result.
func (s *Scheduler) change(id string, fn func(m *queue.Message)) error {
	l := s.lock(id)
	l.Lock()
	defer l.Unlock()
	m, ok := s.q.Get(id)
	if !ok {
		return queue.ErrNotFound
	}
	fn(&m)
	if err := s.q.Update(m); err != nil {
		return err
	}
	s.Wake()
	return nil
}

// RetryNow makes a message due at once (releasing it if held).
func (s *Scheduler) RetryNow(id string) error {
	return s.change(id, func(m *queue.Message) { m.Held, m.NextAttempt = false, time.Time{} })
}

// Hold keeps a message from being attempted until Release.
func (s *Scheduler) Hold(id string) error {
	return s.change(id, func(m *queue.Message) { m.Held = true })
}

// Release lets a held message be attempted again at its scheduled time.
func (s *Scheduler) Release(id string) error {
	return s.change(id, func(m *queue.Message) { m.Held = false })
}

// Delete removes a message. With bounce, its pending recipients are
// reported to the sender as failed in a DSN first.
func (s *Scheduler) Delete(id string, bounce bool) error {
	l := s.lock(id)
	l.Lock()
	defer l.Unlock()
	m, ok := s.q.Get(id)
	if !ok {
		return queue.ErrNotFound
	}
	now := s.opts.Now().UTC()
	var idx []int
	res := map[int]delivery.Result{}
	for i, r := range m.Recipients {
		if r.State != StatePending {
			continue
		}
		idx = append(idx, i)
		res[i] = delivery.Result{Recipient: r.Address, Status: delivery.Failed, Reason: "deleted", Code: "5.0.0",
			Detail: "deleted from the queue by the relay's administrator; last attempt: " + strings.ReplaceAll(r.LastResponse, "\n", " ")}
		s.m.finished.WithLabelValues("bounced", "deleted").Inc()
	}
	if bounce {
		if err := s.notify(&m, idx, res, dsn.Failed, now, time.Time{}); err != nil {
			return fmt.Errorf("queueing the DSN: %w", err)
		}
	}
	return s.q.Remove(id)
}
