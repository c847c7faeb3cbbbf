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
	// Domain matches messages with a pending recipient in it.
	Domain string
}

// List returns the queued messages matching f, oldest first.
func (s *Scheduler) List(f Filter) []MessageInfo {
	now := s.opts.Now()
	domain := strings.ToLower(strings.TrimPrefix(f.Domain, "@"))
	s.mu.Lock()
	var out []MessageInfo
	msgs := s.q.Select(func(m *queue.Message) bool {
		if f.State != "" && messageState(m, s.inflight[m.ID], now) != f.State {
			return false
		}
		if domain == "" {
			return true
		}
		for _, r := range m.Recipients {
			if r.State == StatePending && strings.HasSuffix(strings.ToLower(r.Address), "@"+domain) {
				return true
			}
		}
		return false
	})
	for _, m := range msgs {
		out = append(out, MessageInfo{Message: m, State: messageState(&m, s.inflight[m.ID], now)})
	}
	s.mu.Unlock()
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
