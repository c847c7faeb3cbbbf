package sendingdomain

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/apply"
	"mailroom.io/mailroom/internal/controller/conditions"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/dnsrecord"
)

// This file is the DKIM key concern: the keyring in the domain's key
// Secret is created, adopted (a Secret that is there already, made by an
// earlier SendingDomain of the same name or outside mailroom), rotated on
// schedule or on request, and replaced only on request.

// Labels and type of the DKIM key Secret.
const (
	// SecretLabel names the SendingDomain a DKIM Secret (and DNSEndpoint)
	// belongs to. The Secret is deliberately not owned by the SendingDomain
	// (it outlives it, like cert-manager's certificate Secrets); the label
	// is how the controller finds the domain when the Secret changes.
	SecretLabel = "mailroom.io/sending-domain"
	// SecretType marks DKIM key Secrets.
	SecretType corev1.SecretType = "mailroom.io/dkim"
	// The Secret carries, under v1alpha1.AnnotationRotateDKIM, the value of
	// the SendingDomain's rotate annotation it last acted on. It lives on
	// the Secret, not in status, so that a re-created SendingDomain with the
	// same annotation does not rotate an adopted key.
)

// SecretName is the DKIM key Secret of a SendingDomain, in its namespace.
func SecretName(sd *v1alpha1.SendingDomain) string {
	return sd.Name + "-dkim"
}

// keys is the keyring after this reconcile's key work and the rotation
// plan it followed.
type keys struct {
	ring *dkim.Keyring
	plan dkim.Plan
}

// keyWork is what the key concern decided: the keyring to store (nil when
// there is no usable key), the rotate value acted on, and the Events to
// record once it is stored.
type keyWork struct {
	ring    *dkim.Keyring
	plan    dkim.Plan
	acted   string
	verdict conditions.Verdict
	okMsg   string
	events  []func()
}

// reconcileKeys decides the keyring, stores it, and reports KeyReady. It
// returns nil when there is no usable key.
func (r *Reconciler) reconcileKeys(ctx context.Context, s *state) (*keys, error) {
	w, err := r.renderKeys(s)
	if err != nil || w.ring == nil {
		if err == nil {
			r.keyProblem(s, w.verdict)
		}
		return nil, err
	}
	desired, err := keySecret(s.in.sd, s.in.secret, w.ring, w.acted)
	if err != nil {
		return nil, err
	}
	if err := r.storeKeys(ctx, desired, s.in.secret); err != nil {
		return nil, err
	}
	for _, e := range w.events {
		e()
	}
	if !w.plan.Wake.IsZero() {
		s.wakeIn(w.plan.Wake.Sub(s.in.now))
	}
	s.status.DKIM = dkimStatus(w.ring, w.plan)
	if w.verdict.State != conditions.OK {
		r.keyProblem(s, w.verdict)
	} else {
		s.report(v1alpha1.SendingDomainKeyReady, w.verdict, ReasonKeyReady, w.okMsg)
	}
	return &keys{ring: w.ring, plan: w.plan}, nil
}

// renderKeys decides the keyring from the Secret as read: a new one when
// there is none, a replacement when it is unreadable and the rotate
// annotation asks, else the stored one moved on by the rotation plan.
func (r *Reconciler) renderKeys(s *state) (keyWork, error) {
	sd, secret := s.in.sd, s.in.secret
	if secret == nil {
		return r.createKeys(s)
	}
	requested := rotateRequested(sd, secret)
	ring, perr := dkim.ParseSecretData(secret.Data)
	if perr != nil {
		if !requested {
			return keyWork{verdict: conditions.Block(ReasonKeyInvalid, fmt.Sprintf("Secret %s is not a usable DKIM keyring: %v; set the %s annotation to a new value to replace the key", secret.Name, perr, v1alpha1.AnnotationRotateDKIM))}, nil
		}
		return r.replaceKeys(s)
	}
	var w keyWork
	if s.status.DKIM.ActiveSelector == "" {
		// A new SendingDomain finding its key: re-created, or a key made
		// outside mailroom.
		sel := ring.Active.Selector
		w.events = append(w.events, func() {
			r.Recorder.Eventf(sd, secret, corev1.EventTypeNormal, ReasonKeyAdopted, "AdoptKey", "adopted DKIM key %s from Secret %s", sel, secret.Name)
		})
	}
	if ring.Domain == "" {
		// A key made outside mailroom: adopted, dated by its Secret.
		ring.Domain = sd.Spec.Domain
		if ring.Active.Activated.IsZero() {
			ring.Active.Created = secret.CreationTimestamp.Time
			ring.Active.Activated = secret.CreationTimestamp.Time
		}
	}

	now := s.in.now
	policy := rotationPolicy(sd.Spec.DKIM)
	plan := policy.Plan(ring, dkim.Situation{Now: now, NextVerified: ring.Next != nil && nextVerified(s, ring), RotateRequested: requested})
	w.acted = secret.Annotations[v1alpha1.AnnotationRotateDKIM]
	if plan.MintNext {
		key, err := dkim.Generate(algorithm(sd.Spec.DKIM), r.random())
		if err != nil {
			return w, err
		}
		if err := ring.AddNext(key, now); err != nil {
			return w, err
		}
		sel := ring.Next.Selector
		w.events = append(w.events, func() {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, ReasonNextKeyCreated, "RotateKey", "made the next DKIM key %s; it becomes active once its record resolves", sel)
		})
	}
	if plan.Activate {
		old := ring.Active.Selector
		if err := ring.Activate(now); err != nil {
			return w, err
		}
		if requested {
			w.acted = sd.Annotations[v1alpha1.AnnotationRotateDKIM]
		}
		sel := ring.Active.Selector
		w.events = append(w.events, func() {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, ReasonKeyActivated, "RotateKey", "DKIM key %s now signs; %s stays published until its overlap ends", sel, old)
		})
	}
	if len(plan.Withdraw) > 0 {
		ring.Withdraw(plan.Withdraw...)
		gone := slices.Clone(plan.Withdraw)
		w.events = append(w.events, func() {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, ReasonKeyWithdrawn, "RotateKey", "withdrew the DKIM record of retired key(s) %v", gone)
		})
	}
	if plan.MintNext || plan.Activate || len(plan.Withdraw) > 0 {
		// Plan again for status and wake-up: the keyring moved on.
		plan = policy.Plan(ring, dkim.Situation{Now: now, NextVerified: false, RotateRequested: requested && !plan.Activate})
	}
	w.ring, w.plan = ring, plan

	// The key is used whatever the checks below say: it is never replaced
	// without the annotation.
	alg, err := ring.Active.Algorithm()
	if err != nil {
		return w, err
	}
	switch want := algorithm(sd.Spec.DKIM); {
	case ring.Domain != sd.Spec.Domain:
		w.verdict = conditions.Block(ReasonKeyMismatch, fmt.Sprintf("Secret %s holds keys made for %s, not %s; set the %s annotation to a new value to make a key for this domain", secret.Name, ring.Domain, sd.Spec.Domain, v1alpha1.AnnotationRotateDKIM))
	case alg != want && (ring.Next == nil || !keyIs(ring.Next, want)):
		w.verdict = conditions.Block(ReasonKeyMismatch, fmt.Sprintf("the active key %s is %s, the spec asks for %s; it keeps signing until the next rotation, or set the %s annotation to a new value to replace it now", ring.Active.Selector, alg, want, v1alpha1.AnnotationRotateDKIM))
	default:
		w.okMsg = fmt.Sprintf("DKIM key %s (%s) signs", ring.Active.Selector, alg)
		if plan.WaitingForNext {
			w.okMsg += fmt.Sprintf("; the switch to %s waits for its record to resolve", ring.Next.Selector)
		}
	}
	return w, nil
}

// createKeys makes the first keyring of a domain. A rotate annotation
// already on a new domain asks for nothing: the key is new anyway.
func (r *Reconciler) createKeys(s *state) (keyWork, error) {
	ring, err := r.newKeyring(s)
	if err != nil {
		return keyWork{}, err
	}
	sd := s.in.sd
	alg, _ := ring.Active.Algorithm()
	w := r.freshKeys(s, ring, sd.Annotations[v1alpha1.AnnotationRotateDKIM])
	w.events = append(w.events, func() {
		r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, ReasonKeyCreated, "CreateKey", "made DKIM key %s (%s) in Secret %s", ring.Active.Selector, alg, SecretName(sd))
	})
	return w, nil
}

// replaceKeys makes a new keyring for a Secret that cannot be read, as the
// rotate annotation asked. The unreadable data is dropped: nothing in it
// can sign.
func (r *Reconciler) replaceKeys(s *state) (keyWork, error) {
	secret := s.in.secret
	ring, err := r.newKeyring(s, string(secret.Data[dkim.SecretSelector]), string(secret.Data[dkim.SecretNextSelector]))
	if err != nil {
		return keyWork{}, err
	}
	sd := s.in.sd
	w := r.freshKeys(s, ring, sd.Annotations[v1alpha1.AnnotationRotateDKIM])
	w.events = append(w.events, func() {
		r.Recorder.Eventf(sd, secret, corev1.EventTypeWarning, ReasonKeyReplaced, "ReplaceKey", "replaced the unusable keyring in Secret %s with a new key %s, as the %s annotation asked", secret.Name, ring.Active.Selector, v1alpha1.AnnotationRotateDKIM)
	})
	return w, nil
}

func (r *Reconciler) freshKeys(s *state, ring *dkim.Keyring, acted string) keyWork {
	plan := rotationPolicy(s.in.sd.Spec.DKIM).Plan(ring, dkim.Situation{Now: s.in.now})
	alg, _ := ring.Active.Algorithm()
	return keyWork{ring: ring, plan: plan, acted: acted, okMsg: fmt.Sprintf("DKIM key %s (%s) signs", ring.Active.Selector, alg)}
}

func (r *Reconciler) newKeyring(s *state, avoid ...string) (*dkim.Keyring, error) {
	sd := s.in.sd
	key, err := dkim.Generate(algorithm(sd.Spec.DKIM), r.random())
	if err != nil {
		return nil, err
	}
	avoid = append(avoid, s.status.DKIM.ActiveSelector, s.status.DKIM.NextSelector)
	avoid = append(avoid, s.status.DKIM.RetiringSelectors...)
	return dkim.NewKeyring(sd.Spec.Domain, sd.Spec.DKIM.Selector, key, s.in.now, avoid...), nil
}

// keyProblem sets KeyReady=False and records an Event when the problem is
// new.
func (r *Reconciler) keyProblem(s *state, v conditions.Verdict) {
	old := slices.Clone(s.status.Conditions)
	s.report(v1alpha1.SendingDomainKeyReady, v, "", "")
	if conditions.Changed(old, s.status.Conditions, v1alpha1.SendingDomainKeyReady) {
		r.Recorder.Eventf(s.in.sd, nil, corev1.EventTypeWarning, v.Reason, "CheckKey", "%s", v.Message)
	}
}

// keySecret renders the key Secret holding ring. An existing Secret keeps
// its type (it cannot change; an adopted one may be Opaque).
func keySecret(sd *v1alpha1.SendingDomain, live *corev1.Secret, ring *dkim.Keyring, acted string) (*corev1.Secret, error) {
	data, err := ring.SecretData()
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: sd.Namespace,
			Name:      SecretName(sd),
			Labels:    map[string]string{SecretLabel: sd.Name, apply.ManagedByLabel: apply.ManagedByValue},
		},
		Type: SecretType,
		Data: data,
	}
	if acted != "" {
		secret.Annotations = map[string]string{v1alpha1.AnnotationRotateDKIM: acted}
	}
	if live != nil {
		secret.Type = live.Type
	}
	return secret, nil
}

// storeKeys writes the key Secret by server-side apply, guarded by the
// resourceVersion read: a keyring is never written over one that changed
// meanwhile (the write fails with a Conflict and the reconcile retries on
// fresh data). Apply removes only the fields mailroom's applies own; when
// the live Secret has keyring fields someone else wrote (a key Secret made
// by hand, or by an older mailroom with updates), an update replaces the
// data instead, under the same guard.
func (r *Reconciler) storeKeys(ctx context.Context, desired, live *corev1.Secret) error {
	if live != nil {
		for k := range live.Data {
			if _, keep := desired.Data[k]; !keep && !apply.Owns(live, "data", k) {
				return r.replaceSecret(ctx, desired, live)
			}
		}
	}
	_, err := apply.Guarded(ctx, r.Client, r.Scheme, desired, live)
	return err
}

func (r *Reconciler) replaceSecret(ctx context.Context, desired, live *corev1.Secret) error {
	s := live.DeepCopy()
	s.Data = desired.Data
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	maps.Copy(s.Labels, desired.Labels)
	if len(desired.Annotations) > 0 && s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	maps.Copy(s.Annotations, desired.Annotations)
	return r.Update(ctx, s)
}

func keyIs(k *dkim.Key, a dkim.Algorithm) bool {
	got, err := k.Algorithm()
	return err == nil && got == a
}

// rotateRequested: the domain's rotate annotation holds a value the key
// Secret has not been made for yet.
func rotateRequested(sd *v1alpha1.SendingDomain, secret *corev1.Secret) bool {
	want := sd.Annotations[v1alpha1.AnnotationRotateDKIM]
	return want != "" && want != secret.Annotations[v1alpha1.AnnotationRotateDKIM]
}

// nextVerified: the last verification found the next key's record with
// its current text.
func nextVerified(s *state, ring *dkim.Keyring) bool {
	rec, err := ring.Next.Record()
	if err != nil {
		return false
	}
	return recordVerified(s.status.Records, dnsrecord.DKIMName(ring.Next.Selector, s.in.sd.Spec.Domain), rec)
}

func rotationPolicy(spec v1alpha1.DKIMSpec) dkim.Policy {
	if spec.Rotation == nil {
		return dkim.Policy{Overlap: dkim.DefaultOverlap}
	}
	// The schema's defaults: 2160h and 168h.
	p := dkim.Policy{Interval: 2160 * time.Hour, Overlap: dkim.DefaultOverlap}
	if spec.Rotation.Interval != nil {
		p.Interval = spec.Rotation.Interval.Duration
	}
	if spec.Rotation.Overlap != nil {
		p.Overlap = spec.Rotation.Overlap.Duration
	}
	return p
}

func algorithm(spec v1alpha1.DKIMSpec) dkim.Algorithm {
	if spec.Algorithm == "" {
		return dkim.RSA2048
	}
	return dkim.Algorithm(spec.Algorithm)
}

// dkimStatus shows the keyring's selectors.
func dkimStatus(k *dkim.Keyring, plan dkim.Plan) v1alpha1.DKIMStatus {
	st := v1alpha1.DKIMStatus{ActiveSelector: k.Active.Selector}
	if k.Next != nil {
		st.NextSelector = k.Next.Selector
	}
	for _, r := range k.Retiring {
		st.RetiringSelectors = append(st.RetiringSelectors, r.Selector)
	}
	if !plan.NextRotation.IsZero() {
		t := metav1.NewTime(plan.NextRotation.UTC().Truncate(time.Second))
		st.NextRotation = &t
	}
	return st
}
