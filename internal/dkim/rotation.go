package dkim

import "time"

// DefaultOverlap is how long a retired key's record stays published when no
// rotation policy says otherwise (a manual rotation of a domain without
// spec.dkim.rotation): long enough for mail queued for days at receivers'
// ends to still verify.
const DefaultOverlap = 168 * time.Hour

// Policy is a domain's rotation schedule.
//
// A key is active for Interval. Ahead of that, by the prepublication lead
// (Overlap, but at most half the interval), the next key is made and its
// record published beside the active one. At the end of the interval the
// next key becomes active, but only once its record verifies in DNS; until
// then the active key keeps signing. The retired key's record stays
// published for Overlap after the switch, then is withdrawn.
type Policy struct {
	// Interval a key stays active; zero means no scheduled rotation (only
	// the rotate annotation makes new keys).
	Interval time.Duration
	// Overlap a retired key stays published; also the prepublication lead.
	Overlap time.Duration
}

// prepublish is how long before the switch the next key is made: as long as
// the overlap, so that the new record has been visible for as long as the old
// one will stay, but never more than half the interval, so that a key is
// active for a while before its successor exists.
func (p Policy) prepublish() time.Duration {
	return min(p.Overlap, p.Interval/2)
}

// Situation is what the schedule needs to know besides the keyring.
type Situation struct {
	Now time.Time
	// NextVerified: the next key's record resolves with its meaning at every
	// configured resolver.
	NextVerified bool
	// RotateRequested: the rotate annotation asks for a key that has not
	// been made active yet.
	RotateRequested bool
}

// Plan is what the keyring needs now. The steps are applied in the order of
// the fields; each is safe on its own, so a crash between them is harmless.
type Plan struct {
	// MintNext: generate a key and add it as the next key (Keyring.AddNext).
	MintNext bool
	// Activate: switch to the next key (Keyring.Activate).
	Activate bool
	// Withdraw: retiring selectors whose overlap has ended
	// (Keyring.Withdraw).
	Withdraw []string
	// WaitingForNext: the switch is due but the next key has not verified
	// yet; the active key keeps signing meanwhile.
	WaitingForNext bool
	// NextRotation is when the active key is due to be replaced: zero when
	// no rotation is scheduled or requested.
	NextRotation time.Time
	// Wake is the earliest time at which the plan changes by the clock
	// alone; zero when nothing is scheduled. Verification results are
	// outside events and not covered.
	Wake time.Time
}

// Plan decides the next steps for keyring k.
func (p Policy) Plan(k *Keyring, s Situation) Plan {
	var plan Plan
	wake := func(t time.Time) {
		if plan.Wake.IsZero() || t.Before(plan.Wake) {
			plan.Wake = t
		}
	}

	var due time.Time
	if p.Interval > 0 {
		due = k.Active.Activated.Add(p.Interval)
	}
	if k.Next != nil && due.IsZero() {
		// A next key made under a schedule since removed: it is published
		// already, so it may as well take over once it verifies.
		due = k.Next.Created
	}
	if s.RotateRequested {
		due = s.Now
	}
	plan.NextRotation = due

	switch {
	case due.IsZero():
	case k.Next == nil:
		mintAt := due.Add(-p.prepublish())
		if s.RotateRequested || !s.Now.Before(mintAt) {
			plan.MintNext = true
		} else {
			wake(mintAt)
		}
	case s.Now.Before(due):
		wake(due)
	case s.NextVerified:
		plan.Activate = true
	default:
		plan.WaitingForNext = true
	}

	for _, r := range k.Retiring {
		at := r.Retired.Add(p.Overlap)
		if s.Now.Before(at) {
			wake(at)
		} else {
			plan.Withdraw = append(plan.Withdraw, r.Selector)
		}
	}
	return plan
}
