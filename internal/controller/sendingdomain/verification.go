package sendingdomain

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/conditions"
	"mailroom.io/mailroom/internal/dnsrecord"
)

// This file is the verification concern: the records are looked up at the
// domain's resolvers, every interval while they verify, and sooner while
// they do not. Two things make a check due at once: records that differ
// from the ones last checked, and external-dns having read a new version
// of the DNSEndpoint (it sets status.observedGeneration just before it
// writes the records, which at hundreds of domains can take it a minute or
// more). For publishWindow after the latter, failed checks retry at a
// tenth of the time since external-dns read the records (at least
// MinVerifyBackoff), so Ready trails the records by seconds, or a tenth of
// external-dns' delay; past it, retries back off, doubling, up to the
// interval.

const (
	defaultMinVerifyBackoff = 5 * time.Second
	// defaultVerifyInterval is the CRD schema's default.
	defaultVerifyInterval = 10 * time.Minute
	// publishWindow is how long after external-dns read the DNSEndpoint
	// failed checks keep retrying in step with it.
	publishWindow = 10 * time.Minute
)

// lastCheck is what the reconciler remembers of a domain's last lookup.
type lastCheck struct {
	uid types.UID
	at  time.Time
	// failingSince is when checks of the current records started failing;
	// zero while they pass. Retries back off from it.
	failingSince time.Time
	// readGeneration is the DNSEndpoint generation external-dns had read at
	// the last check; readAt is when verification first saw it read.
	readGeneration int64
	readAt         time.Time
}

func (r *Reconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.lastCheck, key)
	r.mu.Unlock()
}

// verify looks the records up when a check is due and reports DNSVerified
// (and SPFLookupLimitExceeded).
func (r *Reconciler) verify(ctx context.Context, s *state, records []dnsrecord.Record) {
	sd, now := s.in.sd, s.in.now
	interval := verifyInterval(sd.Spec.DNS)
	minBackoff := r.MinVerifyBackoff
	if minBackoff == 0 {
		minBackoff = defaultMinVerifyBackoff
	}
	prev := meta.FindStatusCondition(s.status.Conditions, v1alpha1.SendingDomainDNSVerified)
	var readGeneration int64
	if s.endpointRead {
		readGeneration = s.in.endpoint.Generation
	}

	key := types.NamespacedName{Namespace: sd.Namespace, Name: sd.Name}
	r.mu.Lock()
	last, known := r.lastCheck[key]
	r.mu.Unlock()
	known = known && last.uid == sd.UID
	checked := known && prev != nil && recordsChecked(s.status.Records, records)
	newlyRead := readGeneration != 0 && (!known || last.readGeneration != readGeneration)
	readAt := last.readAt
	if !known {
		readAt = time.Time{}
	}
	if newlyRead {
		readAt = now
	}
	sinceRead := time.Duration(-1)
	if !readAt.IsZero() {
		sinceRead = now.Sub(readAt)
	}
	if checked && !newlyRead {
		verified := last.failingSince.IsZero()
		lastSinceRead := time.Duration(-1)
		if !readAt.IsZero() {
			lastSinceRead = last.at.Sub(readAt)
		}
		due := last.at.Add(verifyDelay(interval, minBackoff, verified, last.at.Sub(last.failingSince), lastSinceRead))
		if now.Before(due) {
			// Not due: the last result still stands for this generation.
			r.keepVerified(s, prev)
			s.wakeIn(due.Sub(now))
			return
		}
	}

	resolvers, err := dnsrecord.ResolverAddrs(sd.Spec.DNS.Verify.Resolvers, r.resolvConf())
	var checks []dnsrecord.Check
	if err != nil {
		for _, rec := range records {
			checks = append(checks, dnsrecord.Check{Record: rec, Reason: err.Error(), Unreachable: true})
		}
	} else {
		v := dnsrecord.Verifier{Resolvers: resolvers, QueryTimeout: r.QueryTimeout}
		checks = v.Verify(ctx, records)
		r.countSPFLookups(ctx, s, v, records)
	}
	status, reason, msg := verifiedCondition(checks)
	failingSince := time.Time{}
	if status != metav1.ConditionTrue {
		// A new set of records (a new key, a changed spec), or records
		// external-dns has just read, start a new streak: the first
		// retries come soon.
		failingSince = now
		if checked && !newlyRead && !last.failingSince.IsZero() {
			failingSince = last.failingSince
		}
	}
	r.mu.Lock()
	if r.lastCheck == nil {
		r.lastCheck = map[types.NamespacedName]lastCheck{}
	}
	r.lastCheck[key] = lastCheck{uid: sd.UID, at: now, failingSince: failingSince, readGeneration: readGeneration, readAt: readAt}
	r.mu.Unlock()

	newRecords := recordStatus(checks)
	if !equality.Semantic.DeepEqual(newRecords, s.status.Records) {
		s.status.Records = newRecords
		t := metav1.NewTime(now.Truncate(time.Second))
		s.status.LastVerified = &t
	}
	if prev == nil || prev.Status != status || prev.Reason != reason || prev.Message != msg {
		if status == metav1.ConditionTrue {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeNormal, ReasonVerified, "VerifyDNS", "%s", msg)
		} else {
			r.Recorder.Eventf(sd, nil, corev1.EventTypeWarning, ReasonVerifyFailed, "VerifyDNS", "%s: %s", reason, msg)
		}
	}
	v := conditions.Pass()
	if status != metav1.ConditionTrue {
		// external-dns (or DNS caches) may still be catching up: progress,
		// not a dead end.
		v = conditions.Wait(reason, msg)
	}
	s.report(v1alpha1.SendingDomainDNSVerified, v, reason, msg)
	s.wakeIn(verifyDelay(interval, minBackoff, status == metav1.ConditionTrue, now.Sub(failingSince), sinceRead))
}

// keepVerified carries the last result over to this generation.
func (r *Reconciler) keepVerified(s *state, prev *metav1.Condition) {
	v := conditions.Pass()
	if prev.Status != metav1.ConditionTrue {
		v = conditions.Wait(prev.Reason, prev.Message)
	}
	s.report(prev.Type, v, prev.Reason, prev.Message)
	if c := meta.FindStatusCondition(s.status.Conditions, v1alpha1.SendingDomainSPFLookupLimit); c != nil {
		s.set.Set(c.Type, c.Status, c.Reason, c.Message)
	}
}

// countSPFLookups sets SPFLookupLimitExceeded from the published SPF record
// and what its includes cost in DNS now. A resolver that does not answer
// leaves the condition as it was.
func (r *Reconciler) countSPFLookups(ctx context.Context, s *state, v dnsrecord.Verifier, records []dnsrecord.Record) {
	i := slices.IndexFunc(records, func(rec dnsrecord.Record) bool { return rec.Kind == dnsrecord.KindSPF })
	if i < 0 {
		s.set.Remove(v1alpha1.SendingDomainSPFLookupLimit)
		return
	}
	count, err := v.CountSPFLookups(ctx, records[i].Value)
	if err != nil {
		return
	}
	msg := fmt.Sprintf("the SPF record at %s needs %d of %d DNS lookups", records[i].Name, count.Lookups, dnsrecord.SPFLookupLimit)
	if len(count.Incomplete) > 0 {
		msg += fmt.Sprintf(" (at least; could not follow %v)", count.Incomplete)
	}
	if !count.Exceeded() {
		s.set.Set(v1alpha1.SendingDomainSPFLookupLimit, metav1.ConditionFalse, ReasonWithinLimit, msg)
		return
	}
	msg = fmt.Sprintf("the SPF record at %s needs more than %d DNS lookups (counted %d, nested includes followed): receivers will return permerror; include fewer senders", records[i].Name, dnsrecord.SPFLookupLimit, count.Lookups)
	if c := meta.FindStatusCondition(s.status.Conditions, v1alpha1.SendingDomainSPFLookupLimit); c == nil || c.Status != metav1.ConditionTrue {
		r.Recorder.Eventf(s.in.sd, nil, corev1.EventTypeWarning, ReasonLookupsExceeded, "VerifyDNS", "%s", msg)
	}
	s.set.Set(v1alpha1.SendingDomainSPFLookupLimit, metav1.ConditionTrue, ReasonLookupsExceeded, msg)
}

func (r *Reconciler) resolvConf() string {
	if r.ResolvConf == "" {
		return "/etc/resolv.conf"
	}
	return r.ResolvConf
}

func verifyInterval(spec v1alpha1.DNSSpec) time.Duration {
	if spec.Verify.Interval == nil || spec.Verify.Interval.Duration <= 0 {
		return defaultVerifyInterval
	}
	return spec.Verify.Interval.Duration
}

// verifyDelay is how long after a check the next one is due. Verified
// records are checked every interval. Failing ones sooner, and never in a
// hot loop: while external-dns is publishing them (sinceRead, the time
// since it read the DNSEndpoint, within publishWindow; negative when it has
// not), a tenth of sinceRead; else the time they have been failing, so the
// wait doubles; both at least minBackoff and at most the interval. A
// resolver that does not answer is retried the same way.
func verifyDelay(interval, minBackoff time.Duration, verified bool, failingFor, sinceRead time.Duration) time.Duration {
	switch {
	case verified:
		return interval
	case sinceRead >= 0 && sinceRead < publishWindow:
		return min(interval, max(minBackoff, sinceRead/10))
	default:
		return min(interval, max(minBackoff, failingFor))
	}
}

// recordsChecked reports whether the last verification (in status) checked
// exactly these records; if not, a check is due now.
func recordsChecked(status []v1alpha1.DNSRecordStatus, records []dnsrecord.Record) bool {
	return slices.EqualFunc(status, records, func(s v1alpha1.DNSRecordStatus, r dnsrecord.Record) bool {
		return s.Name == r.Name && s.Type == r.Type() && s.Value == r.Value
	})
}

// recordVerified reports whether status shows record name verified with
// value.
func recordVerified(status []v1alpha1.DNSRecordStatus, name, value string) bool {
	for _, s := range status {
		if s.Name == name && s.Value == value {
			return s.Verified
		}
	}
	return false
}

// recordStatus turns verification results into status.
func recordStatus(checks []dnsrecord.Check) []v1alpha1.DNSRecordStatus {
	out := make([]v1alpha1.DNSRecordStatus, 0, len(checks))
	for _, c := range checks {
		out = append(out, v1alpha1.DNSRecordStatus{Name: c.Record.Name, Type: c.Record.Type(), Value: c.Record.Value, Verified: c.Verified, Reason: c.Reason})
	}
	return out
}

// verifiedCondition summarises the checks. The reason says what kind of
// record failed and how (condition reasons cannot hold a DNS name); the
// message names the record and the resolver.
func verifiedCondition(checks []dnsrecord.Check) (status metav1.ConditionStatus, reason, message string) {
	var failed []dnsrecord.Check
	for _, c := range checks {
		if !c.Verified {
			failed = append(failed, c)
		}
	}
	if len(failed) == 0 {
		return metav1.ConditionTrue, ReasonRecordsVerified, fmt.Sprintf("all %d records resolve as published", len(checks))
	}
	// Wrong records first: an unreachable resolver says nothing about them.
	slices.SortStableFunc(failed, func(a, b dnsrecord.Check) int {
		switch {
		case a.Unreachable == b.Unreachable:
			return 0
		case b.Unreachable:
			return -1
		default:
			return 1
		}
	})
	first := failed[0]
	switch {
	case first.Unreachable:
		reason = "ResolverUnreachable"
	case first.Missing:
		// Usually external-dns has not published it yet.
		reason = string(first.Record.Kind) + "RecordMissing"
	default:
		reason = string(first.Record.Kind) + "RecordMismatch"
	}
	message = first.Reason
	if len(failed) > 1 {
		message += fmt.Sprintf(" (and %d more records not verified)", len(failed)-1)
	}
	return metav1.ConditionFalse, reason, message
}
