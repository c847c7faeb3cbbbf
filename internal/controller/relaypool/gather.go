package relaypool

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/relayconfig"
)

// world is everything one reconcile of a pool looks at.
type world struct {
	pool *v1alpha1.RelayPool
	now  time.Time

	domains     []relayconfig.Domain
	credentials []relayconfig.Credential
	// skipped explains attached objects left out of the configuration,
	// for the log and the pool's status message.
	skipped []string
	// nextExpiry is when the first previous password expires.
	nextExpiry time.Time

	smarthostLogin []byte
	smarthostErr   string

	tls    *corev1.Secret // the user's TLS Secret, or the issued one
	ca     *corev1.Secret
	peer   *corev1.Secret
	caMap  *corev1.ConfigMap
	tlsErr string

	configSecrets map[string]*corev1.Secret
	sts           *appsv1.StatefulSet
	services      map[string]*corev1.Service
	pods          []corev1.Pod
	relays        map[string]relayReport
}

type relayReport struct {
	status RelayStatus
	err    error
}

func (r *Reconciler) gather(ctx context.Context, pool *v1alpha1.RelayPool) (*world, error) {
	w := &world{pool: pool, now: r.now(), configSecrets: map[string]*corev1.Secret{}, services: map[string]*corev1.Service{}, relays: map[string]relayReport{}}
	nss, err := attachment.ListNamespaces(ctx, r.Client)
	if err != nil {
		return nil, err
	}
	key := pool.Namespace + "/" + pool.Name
	if err := r.gatherDomains(ctx, w, key, nss); err != nil {
		return nil, err
	}
	if err := r.gatherCredentials(ctx, w, key, nss); err != nil {
		return nil, err
	}
	if err := r.gatherSmarthost(ctx, w); err != nil {
		return nil, err
	}
	if err := r.gatherTLS(ctx, w); err != nil {
		return nil, err
	}
	if err := r.gatherOwned(ctx, w); err != nil {
		return nil, err
	}
	r.gatherRelays(ctx, w)
	return w, nil
}

func (r *Reconciler) gatherDomains(ctx context.Context, w *world, key string, nss attachment.Namespaces) error {
	var list v1alpha1.SendingDomainList
	if err := r.List(ctx, &list, client.MatchingFields{attachment.IndexPool: key}); err != nil {
		return err
	}
	for _, sd := range attachment.AdmittedDomains(w.pool, list.Items, nss) {
		secret, err := r.readSecret(ctx, sd.Namespace, sd.Name+"-dkim")
		if err != nil {
			return err
		}
		if secret == nil {
			w.skipped = append(w.skipped, fmt.Sprintf("domain %s: no DKIM key yet", sd.Spec.Domain))
			continue
		}
		d, err := r.keys.domain(sd.Spec.Domain, secret)
		if err != nil {
			w.skipped = append(w.skipped, fmt.Sprintf("domain %s: %v", sd.Spec.Domain, err))
			continue
		}
		w.domains = append(w.domains, d)
	}
	return nil
}

func (r *Reconciler) gatherCredentials(ctx context.Context, w *world, key string, nss attachment.Namespaces) error {
	var list v1alpha1.SMTPCredentialList
	if err := r.List(ctx, &list, client.MatchingFields{attachment.IndexPool: key}); err != nil {
		return err
	}
	signing := map[string]bool{}
	for _, d := range w.domains {
		signing[d.Name] = true
	}
	for i := range list.Items {
		c := &list.Items[i]
		if !c.DeletionTimestamp.IsZero() || !attachment.Allows(w.pool, c.Namespace, nss[c.Namespace]) {
			continue
		}
		if i, _ := attachment.Uncovered(c.Spec.AllowedSenders, signing); i >= 0 {
			continue // the credential's status says which sender
		}
		var s corev1.Secret
		if err := r.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: attachment.SecretName(c)}, &s); err != nil {
			if apierrors.IsNotFound(err) {
				continue // not written yet
			}
			return err
		}
		hash := s.Annotations[attachment.AnnotationPasswordHash]
		if hash == "" {
			continue
		}
		rc := relayconfig.Credential{
			Username: attachment.Username(c), PasswordHash: hash,
			AllowedSenders: c.Spec.AllowedSenders, Limits: c.Spec.Limits, Suspended: c.Spec.Suspended,
			APIKeyHash: s.Annotations[attachment.AnnotationAPIKeyHash],
			Webhook:    webhook(w.pool, c, &s),
		}
		rc.Previous = w.live(s.Annotations[attachment.AnnotationPreviousPasswords])
		rc.PreviousAPIKeys = w.live(s.Annotations[attachment.AnnotationPreviousAPIKeys])
		w.credentials = append(w.credentials, rc)
	}
	return nil
}

// live returns the previous hashes of an annotation that still work, and
// notes the first expiry (the configuration changes then).
func (w *world) live(annotation string) []relayconfig.PreviousPassword {
	var out []relayconfig.PreviousPassword
	for _, p := range attachment.ParsePrevious(annotation) {
		if !w.now.Before(p.NotAfter.Time) {
			continue
		}
		out = append(out, relayconfig.PreviousPassword{Hash: p.Hash, NotAfter: p.NotAfter.Time})
		if w.nextExpiry.IsZero() || p.NotAfter.Time.Before(w.nextExpiry) {
			w.nextExpiry = p.NotAfter.Time
		}
	}
	return out
}

// webhook is a credential's webhook as the relays get it, or nil while it
// cannot work: a host the pool does not allow, or no valid signing secret
// in the credential's Secret yet (the credential's status says which).
// The login itself is rendered either way.
func webhook(pool *v1alpha1.RelayPool, c *v1alpha1.SMTPCredential, s *corev1.Secret) *relayconfig.Webhook {
	if c.Spec.Events == nil || c.Spec.Events.Webhook == nil {
		return nil
	}
	wh := c.Spec.Events.Webhook
	host, err := attachment.WebhookHost(wh.URL)
	if err != nil || !attachment.TargetAllowed(pool, host) {
		return nil
	}
	secret := string(s.Data[attachment.KeyWebhookSecret])
	if attachment.CheckWebhookSecret(secret) != nil {
		return nil
	}
	out := &relayconfig.Webhook{URL: wh.URL, Secret: secret}
	for _, t := range wh.Types {
		out.Types = append(out.Types, string(t))
	}
	return out
}

func (r *Reconciler) gatherSmarthost(ctx context.Context, w *world) error {
	sh := w.pool.Spec.Delivery.Smarthost
	if w.pool.Spec.Delivery.Mode != v1alpha1.DeliveryModeSmarthost || sh == nil || sh.CredentialsSecretRef == nil {
		return nil
	}
	s, err := r.readSecret(ctx, w.pool.Namespace, sh.CredentialsSecretRef.Name)
	if err != nil {
		return err
	}
	switch {
	case s == nil:
		w.smarthostErr = fmt.Sprintf("Secret %s (spec.delivery.smarthost.credentialsSecretRef) does not exist", sh.CredentialsSecretRef.Name)
	case len(s.Data["username"]) == 0 || len(s.Data["password"]) == 0:
		w.smarthostErr = fmt.Sprintf("Secret %s needs the keys username and password", s.Name)
	default:
		w.smarthostLogin = fmt.Appendf(nil, "username: %q\npassword: %q\n", s.Data["username"], s.Data["password"])
	}
	return nil
}

func (r *Reconciler) gatherTLS(ctx context.Context, w *world) error {
	p := w.pool
	if name := p.Spec.Submission.TLS.SecretName; name != "" {
		s, err := r.readSecret(ctx, p.Namespace, name)
		if err != nil {
			return err
		}
		switch {
		case s == nil:
			w.tlsErr = fmt.Sprintf("TLS Secret %s (spec.submission.tls.secretName) does not exist", name)
		case len(s.Data["tls.crt"]) == 0 || len(s.Data["tls.key"]) == 0:
			w.tlsErr = fmt.Sprintf("TLS Secret %s needs the keys tls.crt and tls.key (type kubernetes.io/tls)", name)
		default:
			w.tls = s
		}
	}
	for _, n := range []struct {
		name string
		dst  **corev1.Secret
	}{{CASecretName(p.Name), &w.ca}, {PeerSecretName(p.Name), &w.peer}, {p.Name + "-relay-tls", nil}} {
		var s corev1.Secret
		err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: n.name}, &s)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		if n.dst != nil {
			*n.dst = &s
		} else if p.Spec.Submission.TLS.SecretName == "" {
			w.tls = &s
		}
	}
	var cm corev1.ConfigMap
	if err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: CAConfigMapName(p.Name)}, &cm); err == nil {
		w.caMap = &cm
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

func (r *Reconciler) gatherOwned(ctx context.Context, w *world) error {
	p := w.pool
	var secrets corev1.SecretList
	if err := r.List(ctx, &secrets, client.InNamespace(p.Namespace), client.MatchingLabels{LabelPool: p.Name, LabelManagedBy: ManagedBy}); err != nil {
		return err
	}
	for i := range secrets.Items {
		if _, ok := secrets.Items[i].Labels[LabelShard]; ok {
			w.configSecrets[secrets.Items[i].Name] = &secrets.Items[i]
		}
	}
	var sts appsv1.StatefulSet
	if err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: relayconfig.StatefulSetName(p.Name)}, &sts); err == nil {
		w.sts = &sts
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(p.Namespace), client.MatchingLabels(SelectorLabels(p))); err != nil {
		return err
	}
	w.pods = pods.Items
	return nil
}

// gatherRelays asks every running relay pod for its status, in parallel.
func (r *Reconciler) gatherRelays(ctx context.Context, w *world) {
	type result struct {
		name string
		rep  relayReport
	}
	ch := make(chan result)
	n := 0
	for i := range w.pods {
		pod := &w.pods[i]
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
			continue
		}
		n++
		go func() {
			st, err := r.Relays.Read(ctx, pod)
			ch <- result{pod.Name, relayReport{st, err}}
		}()
	}
	for ; n > 0; n-- {
		res := <-ch
		w.relays[res.name] = res.rep
	}
}

// readSecret reads a Secret the operator does not write (a user's TLS or
// smarthost Secret, a DKIM Secret adopted without mailroom's label) live,
// since the manager caches only Secrets it labels; Secrets it writes come
// from the cache. nil when absent.
func (r *Reconciler) readSecret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
	if apierrors.IsNotFound(err) && r.APIReader != nil {
		err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// keyCache remembers parsed DKIM keys by Secret resourceVersion: parsing a
// thousand RSA keys on every pool reconcile would dominate its cost.
type keyCache struct {
	entries map[string]keyEntry // by namespace/name
}

type keyEntry struct {
	version string
	domain  relayconfig.Domain
	err     error
}

func (k *keyCache) domain(name string, s *corev1.Secret) (relayconfig.Domain, error) {
	id := s.Namespace + "/" + s.Name
	if e, ok := k.entries[id]; ok && e.version == s.ResourceVersion && e.domain.Name == name {
		return e.domain, e.err
	}
	d, err := parseKey(name, s)
	if k.entries == nil {
		k.entries = map[string]keyEntry{}
	}
	k.entries[id] = keyEntry{version: s.ResourceVersion, domain: d, err: err}
	return d, err
}

func parseKey(name string, s *corev1.Secret) (relayconfig.Domain, error) {
	ring, err := dkim.ParseSecretData(s.Data)
	if err != nil {
		return relayconfig.Domain{}, fmt.Errorf("DKIM Secret %s: %w", s.Name, err)
	}
	if ring.Domain != "" && !strings.EqualFold(ring.Domain, name) {
		return relayconfig.Domain{}, fmt.Errorf("DKIM Secret %s holds keys for %s", s.Name, ring.Domain)
	}
	alg, err := ring.Active.Algorithm()
	if err != nil {
		return relayconfig.Domain{}, err
	}
	return relayconfig.Domain{Name: name, Selector: ring.Active.Selector, Algorithm: string(alg), KeyPEM: s.Data[dkim.SecretPrivateKey]}, nil
}
