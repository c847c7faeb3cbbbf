package dkim_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"mailroom.io/mailroom/internal/dkim"
)

// A 90-day interval with a 7-day overlap, the documented default.
var quarterly = dkim.Policy{Interval: 90 * 24 * time.Hour, Overlap: 7 * 24 * time.Hour}

func TestWithoutAPolicyNothingHappensByItself(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", newEd25519(t), day0)
	plan := dkim.Policy{Overlap: dkim.DefaultOverlap}.Plan(k, dkim.Situation{Now: day0.Add(1000 * 24 * time.Hour)})
	if plan.MintNext || plan.Activate || !plan.NextRotation.IsZero() || !plan.Wake.IsZero() {
		t.Fatalf("plan %+v, want nothing scheduled", plan)
	}
}

func TestTheNextKeyIsMadeOneOverlapBeforeTheSwitch(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", newEd25519(t), day0)
	due := day0.Add(90 * 24 * time.Hour)
	mintAt := due.Add(-7 * 24 * time.Hour)

	plan := quarterly.Plan(k, dkim.Situation{Now: mintAt.Add(-time.Second)})
	if plan.MintNext || !plan.Wake.Equal(mintAt) || !plan.NextRotation.Equal(due) {
		t.Fatalf("a second before: %+v; want wake at %v, rotation at %v", plan, mintAt, due)
	}
	if plan := quarterly.Plan(k, dkim.Situation{Now: mintAt}); !plan.MintNext {
		t.Fatalf("at the lead: %+v, want MintNext", plan)
	}
}

func TestThePrepublicationLeadIsAtMostHalfTheInterval(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", newEd25519(t), day0)
	p := dkim.Policy{Interval: 10 * time.Minute, Overlap: 9 * time.Minute}
	if plan := p.Plan(k, dkim.Situation{Now: day0.Add(4 * time.Minute)}); plan.MintNext || !plan.Wake.Equal(day0.Add(5*time.Minute)) {
		t.Fatalf("plan %+v, want the next key made at half the interval", plan)
	}
}

func TestTheSwitchWaitsForTheNextKeyToVerify(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", newEd25519(t), day0)
	due := day0.Add(90 * 24 * time.Hour)
	if err := k.AddNext(newEd25519(t), due.Add(-7*24*time.Hour)); err != nil {
		t.Fatal(err)
	}

	if plan := quarterly.Plan(k, dkim.Situation{Now: due.Add(-time.Second), NextVerified: true}); plan.Activate || !plan.Wake.Equal(due) {
		t.Fatalf("before the interval ends: %+v, want to wait until %v", plan, due)
	}
	plan := quarterly.Plan(k, dkim.Situation{Now: due.Add(time.Hour), NextVerified: false})
	if plan.Activate || !plan.WaitingForNext {
		t.Fatalf("unverified next key at the due time: %+v, want WaitingForNext", plan)
	}
	if plan := quarterly.Plan(k, dkim.Situation{Now: due.Add(time.Hour), NextVerified: true}); !plan.Activate {
		t.Fatalf("verified next key at the due time: %+v, want Activate", plan)
	}
}

func TestRetiringRecordsStayForTheOverlap(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", newEd25519(t), day0)
	_ = k.AddNext(newEd25519(t), day0)
	switchAt := day0.Add(90 * 24 * time.Hour)
	if err := k.Activate(switchAt); err != nil {
		t.Fatal(err)
	}
	old := k.Retiring[0].Selector
	end := switchAt.Add(quarterly.Overlap)

	if plan := quarterly.Plan(k, dkim.Situation{Now: end.Add(-time.Second)}); len(plan.Withdraw) != 0 || !plan.Wake.Equal(end) {
		t.Fatalf("during the overlap: %+v, want wake at %v", plan, end)
	}
	if plan := quarterly.Plan(k, dkim.Situation{Now: end}); !slices.Equal(plan.Withdraw, []string{old}) {
		t.Fatalf("at the end of the overlap: %+v, want %s withdrawn", plan, old)
	}
}

func TestARotateRequestStartsARotationNow(t *testing.T) {
	k := dkim.NewKeyring("example.test", "", newEd25519(t), day0)
	now := day0.Add(time.Hour)
	for _, p := range []dkim.Policy{quarterly, {Overlap: dkim.DefaultOverlap}} {
		plan := p.Plan(k, dkim.Situation{Now: now, RotateRequested: true})
		if !plan.MintNext || !plan.NextRotation.Equal(now) {
			t.Fatalf("policy %+v: %+v, want MintNext now", p, plan)
		}
	}
	_ = k.AddNext(newEd25519(t), now)
	// The requested switch still waits for DNS.
	if plan := quarterly.Plan(k, dkim.Situation{Now: now, RotateRequested: true}); plan.Activate || !plan.WaitingForNext {
		t.Fatalf("unverified: %+v", plan)
	}
	if plan := quarterly.Plan(k, dkim.Situation{Now: now, RotateRequested: true, NextVerified: true}); !plan.Activate {
		t.Fatalf("verified: %+v", plan)
	}
}

// Drives a keyring through many rotations at random moments with DNS that
// verifies only now and then, and checks the rules that must hold at every
// step: the key that signs is always published, a key only starts signing
// once its record verified, a retired record stays for the whole overlap,
// and a due switch happens as soon as the next key verifies.
func TestRotationInvariantsHoldOverManyRotations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	p := dkim.Policy{Interval: 10 * time.Hour, Overlap: 3 * time.Hour}
	now := day0
	k := dkim.NewKeyring("example.test", "", newEd25519(t), now)
	retiredAt := map[string]time.Time{}
	switches := 0

	for step := 0; step < 2000; step++ {
		now = now.Add(time.Duration(rng.IntN(90)) * time.Minute)
		verified := k.Next != nil && rng.IntN(3) > 0
		plan := p.Plan(k, dkim.Situation{Now: now, NextVerified: verified})
		if verified && !now.Before(k.Active.Activated.Add(p.Interval)) && !plan.Activate {
			t.Fatalf("step %d: due and verified, but no switch: %+v", step, plan)
		}

		if plan.MintNext {
			if err := k.AddNext(newEd25519(t), now); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		if plan.Activate {
			if !verified {
				t.Fatalf("step %d: activated an unverified key", step)
			}
			if now.Before(k.Active.Activated.Add(p.Interval)) {
				t.Fatalf("step %d: switched before the interval ended", step)
			}
			retiredAt[k.Active.Selector] = now
			if err := k.Activate(now); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			switches++
		}
		for _, sel := range plan.Withdraw {
			if now.Before(retiredAt[sel].Add(p.Overlap)) {
				t.Fatalf("step %d: %s withdrawn %v after retiring, overlap is %v", step, sel, now.Sub(retiredAt[sel]), p.Overlap)
			}
		}
		k.Withdraw(plan.Withdraw...)

		pub, err := k.Published()
		if err != nil {
			t.Fatal(err)
		}
		if pub[0].Role != dkim.RoleActive || pub[0].Selector != k.Active.Selector {
			t.Fatalf("step %d: active key %s not published first: %+v", step, k.Active.Selector, pub)
		}
		seen := map[string]bool{}
		for _, r := range pub {
			if seen[r.Selector] {
				t.Fatalf("step %d: selector %s published twice", step, r.Selector)
			}
			seen[r.Selector] = true
		}
		for sel, at := range retiredAt {
			if now.Before(at.Add(p.Overlap)) && !seen[sel] {
				t.Fatalf("step %d: %s unpublished during its overlap", step, sel)
			}
		}
	}
	if switches < 50 {
		t.Fatalf("only %d switches in the run; the schedule is stuck", switches)
	}
}
