package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"mailroom.io/mailroom/internal/bounce"
	"mailroom.io/mailroom/internal/delivery"
	"mailroom.io/mailroom/internal/dsn"
	"mailroom.io/mailroom/internal/events"
	"mailroom.io/mailroom/internal/queue"
)

// EventSink turns delivery events into records written in the batch of
// the state change that caused them, and hears when that batch is
// durable (*events.Dispatcher).
type EventSink interface {
	Records(evs []events.Event) []queue.Record
	Recorded(evs []events.Event)
}

// Recipient states in queue.Recipient.State.
const (
	StatePending   = ""
	StateDelivered = "delivered"
	StateFailed    = "failed"
)

// maxDSNHeader bounds the original header returned in a DSN.
const maxDSNHeader = 64 << 10

// record writes an attempt's outcome: results[j] is for recipient idx[j]
// of the message as it was when the attempt started; prevNext is the next
// attempt the message had before its lease.
func (s *Scheduler) record(id string, idx []int, results []delivery.Result, prevNext time.Time) error {
	l := s.lock(id)
	l.Lock()
	defer l.Unlock()
	m, ok := s.q.Get(id)
	if !ok {
		return nil // deleted through the admin interface meanwhile
	}
	now := s.opts.Now().UTC()
	policy := s.retryPolicy()
	cut := s.deliverCtx.Err() != nil
	m.LeaseUntil = time.Time{}

	var failed, deferred, skipped []int // recipient indexes
	var evs []events.Event              // delivered and deferred; failures once their DSN is queued
	var notBefore time.Time
	res := map[int]delivery.Result{}
	for j, r := range results {
		i := idx[j]
		rc := &m.Recipients[i]
		if rc.State != StatePending {
			continue
		}
		if cut && r.Status == delivery.Deferred {
			// Cut off by shutdown: not an attempt; due again after restart.
			// The engine reports a transaction interrupted by the
			// cancellation as a connection failure (ReasonConnection), not
			// only as ReasonLocal, so every deferral of a cut-off attempt
			// is treated alike; a genuine 4xx that raced the cut-off is
			// simply asked again after the restart.
			continue
		}
		res[i] = r
		if r.Status == delivery.Deferred && r.Reason == delivery.ReasonHostDown {
			// No server was tried: not an attempt (RFC 3464's
			// Last-Attempt-Date stays that of the last real one), and the
			// retry is when the servers may be tried again.
			skipped = append(skipped, i)
			if notBefore.IsZero() || r.NotBefore.After(notBefore) {
				notBefore = r.NotBefore
			}
			rc.LastResponse = r.Diagnostic()
			continue
		}
		rc.Attempts++
		rc.LastAttempt = now
		rc.LastResponse = r.Diagnostic()
		m.History = append(m.History, queue.Attempt{Time: now, Recipient: rc.Address, Status: r.Status.String(),
			Reason: string(r.Reason), Code: r.Code, Host: r.RemoteHost, IP: r.RemoteIP, TLS: r.TLSVersion, Reply: r.Diagnostic()})
		switch r.Status {
		case delivery.Delivered:
			rc.State = StateDelivered
			s.m.finished.WithLabelValues("delivered", "").Inc()
			evs = append(evs, events.ForResult(&m, r, rc.Attempts, now))
		case delivery.Failed:
			rc.State = StateFailed
			failed = append(failed, i)
		default:
			deferred = append(deferred, i)
		}
	}

	var warn []int
	switch {
	case len(deferred) > 0:
		m.Attempts++
		next, giveUp := policy.Next(m.ReceivedAt, now, m.Attempts, s.opts.Rand())
		if !m.Expires.IsZero() && !now.Before(m.Expires) {
			giveUp = true
		}
		if giveUp {
			for _, i := range append(deferred, skipped...) {
				r := res[i]
				m.Recipients[i].State = StateFailed
				res[i] = expired(r, m.ReceivedAt, now)
				failed = append(failed, i)
			}
			skipped = nil
		} else {
			m.NextAttempt = next
			for _, i := range deferred {
				evs = append(evs, events.ForResult(&m, res[i], m.Recipients[i].Attempts, now))
			}
			if !m.DelayWarned && policy.DelayWarningDue(m.ReceivedAt, now) {
				m.DelayWarned = true
				warn = append(deferred, skipped...)
			}
		}
	case len(skipped) > 0:
		expires := policy.Expires(m.ReceivedAt)
		if !m.Expires.IsZero() {
			expires = m.Expires
		}
		if !now.Before(expires) {
			for _, i := range skipped {
				m.Recipients[i].State = StateFailed
				res[i] = expired(res[i], m.ReceivedAt, now)
				failed = append(failed, i)
			}
			break
		}
		if notBefore.IsZero() || !notBefore.After(now) {
			notBefore = now.Add(policy.Delay(max(m.Attempts, 1), s.opts.Rand()))
		}
		m.NextAttempt = notBefore
		if notBefore.After(expires) {
			m.NextAttempt = expires
		}
	default:
		// Nothing deferred was attempted (delivered, failed, or cut off):
		// what is still pending is due as it was before the lease.
		m.NextAttempt = prevNext
	}
	if n := len(m.History) - s.opts.HistoryLimit; n > 0 {
		m.History = m.History[n:]
	}
	for _, i := range failed {
		s.m.finished.WithLabelValues("bounced", string(res[i].Reason)).Inc()
	}

	if err := s.notify(&m, failed, res, dsn.Failed, now, time.Time{}); err != nil {
		// Without its DSN a failure must not be final: retry those
		// recipients (they will fail again, and the DSN with them).
		for _, i := range failed {
			m.Recipients[i].State = StatePending
		}
		m.NextAttempt = now.Add(policy.Delay(1, s.opts.Rand()))
		s.log.Error("scheduler: queueing the failure DSN failed; retrying later", "msgID", m.ID, "err", err)
	} else {
		for _, i := range failed {
			evs = append(evs, events.ForResult(&m, res[i], m.Recipients[i].Attempts, now))
		}
	}
	if err := s.notify(&m, warn, res, dsn.Delayed, now, policy.Expires(m.ReceivedAt)); err != nil {
		m.DelayWarned = false
		s.log.Error("scheduler: queueing the delay DSN failed", "msgID", m.ID, "err", err)
	}
	return s.save(m, evs)
}

// SetEvents makes the scheduler record delivery events (Options.Events)
// when it was built without them; call it before Start.
func (s *Scheduler) SetEvents(e EventSink) { s.opts.Events = e }

// save writes m's new state, or removes it once no recipient is pending,
// with the records of its events in the same batch.
func (s *Scheduler) save(m queue.Message, evs []events.Event) error {
	var rs []queue.Record
	if s.opts.Events != nil {
		rs = s.opts.Events.Records(evs)
	}
	for _, r := range m.Recipients {
		if r.State == StatePending {
			err := s.q.Update(m, rs...)
			if err == nil {
				s.recorded(evs)
			}
			return err
		}
	}
	if err := s.q.RemoveWith(m.ID, rs...); err != nil {
		if errors.Is(err, queue.ErrNotFound) {
			return nil // deleted meanwhile: its events did not happen
		}
		return err
	}
	s.recorded(evs)
	s.log.Info("scheduler: message finished", "msgID", m.ID, "from", m.From, "recipients", len(m.Recipients))
	return nil
}

func (s *Scheduler) recorded(evs []events.Event) {
	if s.opts.Events != nil {
		s.opts.Events.Recorded(evs)
	}
}

// expired turns the last deferral into the final failure of a message
// that outlived maxAge.
func expired(last delivery.Result, received, now time.Time) delivery.Result {
	r := last
	r.Status = delivery.Failed
	r.Reason = delivery.ReasonExpired
	r.Code = "5.4.7" // delivery time expired (RFC 3463)
	r.Detail = fmt.Sprintf("gave up after %s of retrying", now.Sub(received).Round(time.Second))
	if d := last.Diagnostic(); d != "" {
		r.Detail += "; last attempt: " + strings.ReplaceAll(d, "\n", " ")
	}
	r.Reply = delivery.Reply{}
	// The class stays the last deferral's (what kept failing), but never
	// permanent: the relay gave up on temporary failures, so the address
	// is not a hard bounce.
	if r.Class.Kind == bounce.None {
		r.Class = delivery.ClassOf(last)
	}
	if r.Class.Kind == bounce.None {
		r.Class.Kind = bounce.Other
	}
	r.Class.Permanent = false
	return r
}

// notify queues one DSN of the given action for the recipients idx of m
// that asked for it (NOTIFY). Nothing is sent for the null sender: those
// are counted as dropped instead.
func (s *Scheduler) notify(m *queue.Message, idx []int, res map[int]delivery.Result, action dsn.Action, now, until time.Time) error {
	if len(idx) == 0 {
		return nil
	}
	if m.From == "" {
		s.m.dsnDropped.Add(float64(len(idx)))
		s.log.Warn("scheduler: no DSN for a message from the null sender", "msgID", m.ID, "action", string(action), "recipients", len(idx))
		return nil
	}
	var rcpts []dsn.Recipient
	for _, i := range idx {
		rc := m.Recipients[i]
		if !dsn.Wanted(m.From, rc.Notify, action) {
			continue
		}
		// Last-Attempt-Date is the last real attempt: a pass that skipped
		// servers known to be down is none (zero: there was none yet).
		rcpts = append(rcpts, res[i].DSNRecipient(rc.OriginalRecipient, rc.LastAttempt, until))
	}
	if len(rcpts) == 0 {
		return nil
	}
	return s.queueDSN(*m, rcpts, action, now)
}

// queueDSN builds a report about m and commits it to the queue from the
// null sender, to m's envelope sender, DKIM-signed when the relay holds a
// key for the report's From domain.
func (s *Scheduler) queueDSN(m queue.Message, rcpts []dsn.Recipient, action dsn.Action, now time.Time) error {
	var hdr []byte
	if rc, err := s.q.Open(m.ID); err == nil {
		hdr, _ = dsn.OriginalHeader(rc, maxDSNHeader)
		rc.Close()
	}
	msg, err := dsn.Build(dsn.Report{ReportingMTA: s.opts.Hostname, Sender: m.From, EnvelopeID: m.EnvelopeID,
		ArrivalDate: m.ReceivedAt, Date: s.opts.Now(), Recipients: rcpts, OriginalHeader: hdr})
	if err != nil {
		return err
	}
	var sig string
	if s.opts.Sign != nil {
		if sig, err = s.opts.Sign(msg.Data); err != nil {
			return fmt.Errorf("signing the DSN: %w", err)
		}
	}
	w, err := s.q.NewReportWriter()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg.Data); err != nil {
		w.Abort()
		return err
	}
	to := make([]queue.Recipient, len(msg.To))
	for i, a := range msg.To {
		to[i] = queue.Recipient{Address: a}
	}
	// dsn_sent events of m's recipients are durable with the DSN itself.
	var evs []events.Event
	var rs []queue.Record
	if s.opts.Events != nil {
		for _, r := range rcpts {
			e := events.ForMessage(events.DSNSent, &m, now)
			e.Recipient, e.EnhancedStatus, e.RemoteMTA = r.FinalRecipient, r.Status, r.RemoteMTA
			evs = append(evs, e)
		}
		rs = s.opts.Events.Records(evs)
	}
	if err := w.Commit(queue.Message{From: "", Recipients: to, Origin: "dsn:" + m.ID, Header: sig,
		EightBit: msg.EightBit, SMTPUTF8: msg.SMTPUTF8}, rs...); err != nil {
		return err
	}
	s.recorded(evs)
	s.m.dsnQueued.WithLabelValues(string(action)).Inc()
	s.log.Info("scheduler: DSN queued", "msgID", m.ID, "dsnID", w.ID(), "action", string(action), "to", m.From, "recipients", len(rcpts), "signed", sig != "")
	return nil
}
