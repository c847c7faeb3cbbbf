package smtpcredential

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/relay/config"
)

// DefaultUserSecretResync is how often a credential whose webhook names a user's
// Secret is reconciled again. The manager caches only Secrets mailroom
// writes, so the user's Secret is read live (APIReader) and not watched;
// a change to it takes effect within this period (or at once on any change
// of the credential).
const DefaultUserSecretResync = 2 * time.Minute

// hookState is what one reconcile found about the credential's webhook.
type hookState struct {
	secret hookSecret
	// reason and message block Ready; empty when the webhook can work.
	reason, message string
	// ref is the user's Secret, for the resync; empty when generated.
	ref string
}

// resolveWebhook checks the webhook's target against the pool and finds
// its signing secret: the user's Secret, or the one generated earlier
// (kept in the credential's Secret), or a new one.
func (r *Reconciler) resolveWebhook(ctx context.Context, in *inputs) error {
	ev := in.cred.Spec.Events
	if ev == nil || ev.Webhook == nil {
		return nil
	}
	wh := ev.Webhook
	st := &hookState{}
	in.hook = st
	if ref := wh.SecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = "secret"
		}
		st.ref = ref.Name
		var s corev1.Secret
		reader := r.APIReader
		if reader == nil {
			reader = r.Client
		}
		err := reader.Get(ctx, types.NamespacedName{Namespace: in.cred.Namespace, Name: ref.Name}, &s)
		switch {
		case apierrors.IsNotFound(err):
			st.reason = ReasonWebhookSecretMissing
			st.message = fmt.Sprintf("Secret %s (spec.events.webhook.secretRef) does not exist in namespace %s; create it with key %s holding a whsec_<base64> signing secret, or remove secretRef to have one generated",
				ref.Name, in.cred.Namespace, key)
		case err != nil:
			return err
		case len(s.Data[key]) == 0:
			st.reason = ReasonWebhookSecretMissing
			st.message = fmt.Sprintf("Secret %s (spec.events.webhook.secretRef) has no key %s; put the signing secret there or set secretRef.key", ref.Name, key)
		default:
			v := strings.TrimSpace(string(s.Data[key]))
			if err := attachment.CheckWebhookSecret(v); err != nil {
				// The value itself is never shown.
				st.reason = ReasonWebhookSecretInvalid
				st.message = fmt.Sprintf("key %s of Secret %s (spec.events.webhook.secretRef) %v", key, ref.Name, err)
			} else {
				st.secret = hookSecret{Value: v, Source: "secret/" + ref.Name + "/" + key}
			}
		}
	} else {
		st.secret = generatedHook(in.secret)
		if st.secret.Value == "" {
			var b [32]byte
			random := r.Random
			if random == nil {
				random = cryptoRand
			}
			if _, err := io.ReadFull(random, b[:]); err != nil {
				return err
			}
			st.secret = hookSecret{Value: attachment.NewWebhookSecret(b), Source: sourceGenerated}
		}
	}
	if in.pool == nil {
		return nil
	}
	host, err := attachment.WebhookHost(wh.URL)
	if err != nil || !attachment.TargetAllowed(in.pool, host) {
		targets := attachment.DescribeTargets(in.pool)
		st.reason = ReasonWebhookTargetNotAllowed
		st.message = fmt.Sprintf("spec.events.webhook.url host %s is not allowed by RelayPool %s: its spec.events.allowedTargets is %s; use a host it allows or ask the pool's owner to add this one",
			host, poolName(in.cred), targets)
	}
	return nil
}

// generatedHook is the generated secret an existing credential Secret
// holds, or none.
func generatedHook(s *corev1.Secret) hookSecret {
	if s == nil || s.Annotations[annotationWebhookSource] != sourceGenerated {
		return hookSecret{}
	}
	v := string(s.Data[attachment.KeyWebhookSecret])
	if attachment.CheckWebhookSecret(v) != nil {
		return hookSecret{}
	}
	return hookSecret{Value: v, Source: sourceGenerated}
}

// holdsWebhook reports whether the relay configuration's webhook of this
// credential is the one it names (URL, signing secret in the Secret
// written, types), or none when it names none.
func holdsWebhook(cred *v1alpha1.SMTPCredential, secret *corev1.Secret, got *config.Webhook) bool {
	if cred.Spec.Events == nil || cred.Spec.Events.Webhook == nil {
		return got == nil
	}
	wh := cred.Spec.Events.Webhook
	var types []string
	for _, t := range wh.Types {
		types = append(types, string(t))
	}
	slices.Sort(types)
	return got != nil && got.URL == wh.URL && got.Secret == string(secret.Data[attachment.KeyWebhookSecret]) && slices.Equal(got.Types, types)
}
