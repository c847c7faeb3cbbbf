package dkim

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Key is a DKIM key mailroom holds the private half of.
type Key struct {
	Selector string
	Signer   crypto.Signer
	// Created is when the key was generated.
	Created time.Time
	// Activated is when the key started signing; zero while it waits as the
	// next key.
	Activated time.Time
}

// Record is the key's DNS record text.
func (k Key) Record() (string, error) { return RecordText(k.Signer) }

// Algorithm is the key's algorithm.
func (k Key) Algorithm() (Algorithm, error) { return AlgorithmOf(k.Signer) }

// RetiringKey is a key that no longer signs but whose record stays published
// so that mail signed before the switch still verifies. Its private half is
// dropped at the switch: nothing may sign with it again.
type RetiringKey struct {
	Selector string
	Record   string
	// Retired is when the key stopped signing.
	Retired time.Time
}

// maxWithdrawn bounds the history of withdrawn selectors kept to avoid
// reusing them; a few rotations' worth is enough for caches to forget.
const maxWithdrawn = 16

// Keyring is everything mailroom keeps about one domain's DKIM keys: the
// active key that signs, an optional next key published ahead of the switch,
// and retiring records still published. It lives in the domain's Secret (see
// SecretData).
type Keyring struct {
	// Domain is the mail domain the keys were made for; a keyring found for
	// another domain is not adopted.
	Domain string
	Active Key
	Next   *Key
	// Retiring keys, oldest first.
	Retiring []RetiringKey
	// Withdrawn are recently unpublished selectors, oldest first, kept so
	// that a new key never reuses a selector a resolver may still cache.
	Withdrawn []string
}

// NewKeyring starts a keyring for domain with key as the active key.
// selector is the one the spec asks for; empty picks one with NewSelector,
// avoiding the selectors in avoid (for example those of a broken keyring
// being replaced).
func NewKeyring(domain, selector string, key crypto.Signer, now time.Time, avoid ...string) *Keyring {
	if selector == "" {
		selector = NewSelector(now, func(s string) bool { return slices.Contains(avoid, s) })
	}
	return &Keyring{
		Domain:    domain,
		Active:    Key{Selector: selector, Signer: key, Created: now, Activated: now},
		Withdrawn: boundedHistory(avoid, selector),
	}
}

func boundedHistory(selectors []string, except string) []string {
	var out []string
	for _, s := range selectors {
		if s != except && s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) > maxWithdrawn {
		out = out[len(out)-maxWithdrawn:]
	}
	return out
}

// Taken reports whether selector is in use or was used recently.
func (k *Keyring) Taken(selector string) bool {
	if k.Active.Selector == selector || (k.Next != nil && k.Next.Selector == selector) {
		return true
	}
	for _, r := range k.Retiring {
		if r.Selector == selector {
			return true
		}
	}
	return slices.Contains(k.Withdrawn, selector)
}

// AddNext makes key the next key under a fresh selector. It is an error to
// add one while another waits.
func (k *Keyring) AddNext(key crypto.Signer, now time.Time) error {
	if k.Next != nil {
		return fmt.Errorf("next key %s already waits", k.Next.Selector)
	}
	k.Next = &Key{Selector: NewSelector(now, k.Taken), Signer: key, Created: now}
	return nil
}

// Activate makes the next key the active one and retires the active one.
// The caller must only do this once the next key's record resolves; the
// retired record stays published (see Published) until Withdraw.
func (k *Keyring) Activate(now time.Time) error {
	if k.Next == nil {
		return errors.New("no next key to activate")
	}
	record, err := k.Active.Record()
	if err != nil {
		return fmt.Errorf("active key %s: %w", k.Active.Selector, err)
	}
	k.Retiring = append(k.Retiring, RetiringKey{Selector: k.Active.Selector, Record: record, Retired: now})
	k.Active = *k.Next
	k.Active.Activated = now
	k.Next = nil
	return nil
}

// Withdraw drops the named retiring keys, so their records are no longer
// published. The active and next keys are never withdrawn: only retiring
// selectors are matched.
func (k *Keyring) Withdraw(selectors ...string) {
	var keep []RetiringKey
	for _, r := range k.Retiring {
		if slices.Contains(selectors, r.Selector) {
			k.Withdrawn = append(k.Withdrawn, r.Selector)
			continue
		}
		keep = append(keep, r)
	}
	k.Retiring = keep
	k.Withdrawn = boundedHistory(k.Withdrawn, "")
}

// PublishedKey is one DKIM record the domain must publish.
type PublishedKey struct {
	Selector string
	Record   string
	Role     Role
}

// Role is why a key's record is published.
type Role string

const (
	RoleActive   Role = "active"
	RoleNext     Role = "next"
	RoleRetiring Role = "retiring"
)

// Published lists the records to publish: the active key first, then the
// next key, then retiring keys. Because every key the relay may sign with is
// active or retiring, and both are listed, no signing key's record is ever
// left out.
func (k *Keyring) Published() ([]PublishedKey, error) {
	rec, err := k.Active.Record()
	if err != nil {
		return nil, fmt.Errorf("active key %s: %w", k.Active.Selector, err)
	}
	out := []PublishedKey{{Selector: k.Active.Selector, Record: rec, Role: RoleActive}}
	if k.Next != nil {
		rec, err := k.Next.Record()
		if err != nil {
			return nil, fmt.Errorf("next key %s: %w", k.Next.Selector, err)
		}
		out = append(out, PublishedKey{Selector: k.Next.Selector, Record: rec, Role: RoleNext})
	}
	for _, r := range k.Retiring {
		out = append(out, PublishedKey{Selector: r.Selector, Record: r.Record, Role: RoleRetiring})
	}
	return out, nil
}
