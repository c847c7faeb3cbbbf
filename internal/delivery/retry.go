package delivery

import (
	"errors"
	"time"
)

// DefaultJitter is the jitter the relay uses: each delay moves randomly by
// up to ±10%, so that messages deferred together do not all come back at
// the same instant.
const DefaultJitter = 0.1

// RetryPolicy decides when a deferred message is tried again and when the
// relay gives up. It is pure: the scheduler passes the clock and the
// randomness in.
type RetryPolicy struct {
	// Schedule is the wait after the first, second, ... failed attempt;
	// the last step repeats.
	Schedule []time.Duration
	// MaxAge is how long after arrival the relay keeps trying; then the
	// message fails with a DSN.
	MaxAge time.Duration
	// DelayWarningAfter is the age at which one "delayed" DSN is sent; 0
	// disables it.
	DelayWarningAfter time.Duration
	// Jitter is the fraction by which each wait is randomly lengthened or
	// shortened (0.1: ±10%); 0: none.
	Jitter float64
}

// Validate checks the policy.
func (p RetryPolicy) Validate() error {
	if len(p.Schedule) == 0 {
		return errors.New("retry schedule is empty")
	}
	for _, d := range p.Schedule {
		if d <= 0 {
			return errors.New("retry schedule steps must be positive")
		}
	}
	if p.MaxAge <= 0 {
		return errors.New("retry maxAge must be positive")
	}
	if p.DelayWarningAfter < 0 {
		return errors.New("delayWarningAfter must not be negative")
	}
	if p.Jitter < 0 || p.Jitter >= 1 {
		return errors.New("retry jitter must be in [0, 1)")
	}
	return nil
}

// Delay is the wait after the attempts-th failed attempt (1 for the
// first), jittered by rnd, a uniform random number in [0, 1).
func (p RetryPolicy) Delay(attempts int, rnd float64) time.Duration {
	if len(p.Schedule) == 0 {
		return 0
	}
	i := min(max(attempts, 1), len(p.Schedule)) - 1
	d := float64(p.Schedule[i])
	return time.Duration(d * (1 + p.Jitter*(2*rnd-1)))
}

// Expires is when the relay gives up on a message that arrived at
// received: the Will-Retry-Until of a delay DSN.
func (p RetryPolicy) Expires(received time.Time) time.Time {
	return received.Add(p.MaxAge)
}

// Next returns when to try again after the attempts-th attempt failed
// temporarily at now, or giveUp once the message has reached MaxAge. The
// next attempt is never later than the expiry, so the last attempt is
// made right when the message expires rather than a schedule step before.
func (p RetryPolicy) Next(received, now time.Time, attempts int, rnd float64) (next time.Time, giveUp bool) {
	expires := p.Expires(received)
	if !now.Before(expires) {
		return time.Time{}, true
	}
	next = now.Add(p.Delay(attempts, rnd))
	if next.After(expires) {
		next = expires
	}
	return next, false
}

// DelayWarningDue reports whether the one "delayed" DSN is due for a
// message that arrived at received and is still undelivered at now. The
// scheduler records that it sent it; a warning that would come at or after
// expiry is never due, since the failure DSN says it all.
func (p RetryPolicy) DelayWarningDue(received, now time.Time) bool {
	if p.DelayWarningAfter <= 0 || p.DelayWarningAfter >= p.MaxAge {
		return false
	}
	return !now.Before(received.Add(p.DelayWarningAfter)) && now.Before(p.Expires(received))
}
