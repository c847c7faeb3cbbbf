package smtpcredential_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/apikey"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/controller/relaypool"
	"mailroom.io/mailroom/internal/controller/relaypool/pooltest"
	"mailroom.io/mailroom/internal/controller/smtpcredential"
	"mailroom.io/mailroom/internal/dkim"
	"mailroom.io/mailroom/internal/relay/config"
	"mailroom.io/mailroom/internal/relay/password"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/relayhost"
	"mailroom.io/mailroom/internal/testutil/writecount"
)

// within bounds every poll: a manager reconciles in milliseconds, the
// relay reloads its configuration within a second or two.
const within = 60 * time.Second

var env *envtest.Env

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	var err error
	if env, err = envtest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// world runs the pool and credential controllers in one manager, as the
// operator does, with a fake clock for the grace periods, and the real
// relay process for the pool's one pod.
type world struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client
	writes *writecount.Counter
	clock  *clocktesting.FakeClock
	pool   *relaypool.Reconciler
	creds  *smtpcredential.Reconciler
	relay  *relayhost.Host
}

func newWorld(t *testing.T, pool *v1alpha1.RelayPool) *world {
	t.Helper()
	w := &world{t: t, clock: clocktesting.NewFakeClock(time.Now())}
	w.relay = relayhost.New(t, env.Client, pool)
	m := pooltest.Start(t, env, w.relay, func(m *pooltest.Manager) {
		m.Pool.Clock, m.Creds.Clock = w.clock, w.clock
		// The user's Secret is not watched: a short resync stands for the
		// operator's two minutes.
		m.Creds.UserSecretResync = 500 * time.Millisecond
	})
	w.ctx, w.c, w.writes, w.pool, w.creds = m.Ctx, m.Client, m.Writes, m.Pool, m.Creds
	return w
}

func (w *world) create(objs ...client.Object) {
	w.t.Helper()
	for _, o := range objs {
		if err := w.c.Create(w.ctx, o); err != nil {
			w.t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func (w *world) eventually(what string, f func() error) {
	w.t.Helper()
	pooltest.Eventually(w.t, within, what, f)
}

// ready waits for the credential's Ready condition to have status and
// reason (any reason when empty) for its current generation, and returns
// its message.
func (w *world) ready(ns, name string, status metav1.ConditionStatus, reason string) string {
	w.t.Helper()
	var msg string
	w.eventually(fmt.Sprintf("%s/%s Ready=%s %s", ns, name, status, reason), func() error {
		var cred v1alpha1.SMTPCredential
		if err := w.c.Get(w.ctx, types.NamespacedName{Namespace: ns, Name: name}, &cred); err != nil {
			return err
		}
		c := meta.FindStatusCondition(cred.Status.Conditions, v1alpha1.ConditionReady)
		switch {
		case c == nil:
			return errors.New("no Ready condition")
		case c.Status != status || (reason != "" && c.Reason != reason) || c.ObservedGeneration != cred.Generation:
			return fmt.Errorf("Ready=%s %s (generation %d of %d): %s", c.Status, c.Reason, c.ObservedGeneration, cred.Generation, c.Message)
		}
		msg = c.Message
		return nil
	})
	return msg
}

func (w *world) secret(ns, name string) *corev1.Secret {
	w.t.Helper()
	var s corev1.Secret
	if err := w.c.Get(w.ctx, types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
		w.t.Fatal(err)
	}
	return &s
}

// credentialInConfig waits until the relay's own loader, reading the
// pool's Secrets as a pod would, finds the login and ok accepts it.
func (w *world) credentialInConfig(username string, ok func(config.Credential) error) config.Credential {
	w.t.Helper()
	var got config.Credential
	w.eventually("the relay configuration of "+username, func() error {
		cfg, err := w.relay.Load(w.ctx, within)
		if err != nil {
			return err
		}
		for _, c := range cfg.Credentials {
			if c.Username == username {
				got = c
				return ok(c)
			}
		}
		return errors.New("not in the configuration")
	})
	return got
}

// update changes an object as a user would: through the API server, not
// the manager's cache (which holds no user Secrets).
func (w *world) update(obj client.Object, change func()) {
	w.t.Helper()
	w.eventually("update "+obj.GetName(), func() error {
		if err := env.Client.Get(w.ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		change()
		return env.Client.Update(w.ctx, obj)
	})
}

const (
	hookURL    = "http://hooks.shop.svc:8080/mail-events"
	userSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="
)

func TestAPIKeyAndWebhook(t *testing.T) {
	pool := &v1alpha1.RelayPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "transactional"},
		Spec:       v1alpha1.RelayPoolSpec{Hostname: "relay.example.com"},
	}
	w := newWorld(t, pool)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	data, err := dkim.NewKeyring("example.com", "mr-test", key, time.Now()).SecretData()
	if err != nil {
		t.Fatal(err)
	}
	shop := &v1alpha1.SMTPCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "shop"},
		Spec: v1alpha1.SMTPCredentialSpec{
			PoolRef: v1alpha1.PoolReference{Name: "transactional"}, AllowedSenders: []string{"example.com"},
			PasswordRotation: v1alpha1.PasswordRotation{GracePeriod: &metav1.Duration{Duration: time.Hour}},
			Events: &v1alpha1.CredentialEvents{Webhook: &v1alpha1.Webhook{
				URL: hookURL, SecretRef: &v1alpha1.WebhookSecretReference{Name: "shop-hook"},
				Types: []v1alpha1.EventType{v1alpha1.EventDelivered, v1alpha1.EventBounced},
			}},
		},
	}
	billing := &v1alpha1.SMTPCredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "billing"},
		Spec: v1alpha1.SMTPCredentialSpec{
			PoolRef: v1alpha1.PoolReference{Name: "transactional"}, AllowedSenders: []string{"example.com"},
			Events: &v1alpha1.CredentialEvents{Webhook: &v1alpha1.Webhook{URL: "http://hooks.billing.svc.cluster.local/events"}},
		},
	}
	w.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mail"}},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "example-com-dkim", Labels: map[string]string{
				attachment.LabelManagedBy: attachment.ManagedBy, "mailroom.io/sending-domain": "example-com"}},
			Type: "mailroom.io/dkim", Data: data,
		},
		&v1alpha1.SendingDomain{
			ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "example-com"},
			Spec:       v1alpha1.SendingDomainSpec{Domain: "example.com", PoolRef: v1alpha1.PoolReference{Name: "transactional"}},
		},
		pool, shop, billing)
	w.relay.Start(w.ctx, within)

	var apiKey string
	t.Run("the Secret carries an API key whose hash the relays hold", func(t *testing.T) {
		msg := w.ready("mail", "shop", metav1.ConditionFalse, smtpcredential.ReasonWebhookSecretMissing)
		if !strings.Contains(msg, "Secret shop-hook") || !strings.Contains(msg, "key secret") {
			t.Errorf("the message does not name the Secret and key: %s", msg)
		}
		s := w.secret("mail", "shop-smtp")
		apiKey = string(s.Data["api-key"])
		if user, ok := apikey.User(apiKey); !ok || user != "shop.mail" {
			t.Errorf("api-key %q does not name shop.mail", apiKey)
		}
		if got := string(s.Data["api-url"]); got != "https://transactional-relay.mail.svc:443" {
			t.Errorf("api-url = %s", got)
		}
		if _, ok := s.Data["webhook-secret"]; ok {
			t.Error("webhook-secret written although the referenced Secret does not exist")
		}
		c := w.credentialInConfig("shop.mail", func(c config.Credential) error {
			return password.Verify(c.APIKeyHash, apiKey)
		})
		if strings.Contains(c.APIKeyHash, apiKey) {
			t.Error("the relay configuration holds the API key itself")
		}
		if c.Webhook != nil {
			t.Errorf("a webhook without a signing secret was rendered: %+v", c.Webhook)
		}
	})

	t.Run("a malformed signing secret is named, a valid one makes it Ready", func(t *testing.T) {
		hook := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "shop-hook"}, Data: map[string][]byte{"secret": []byte("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")}}
		w.create(hook)
		msg := w.ready("mail", "shop", metav1.ConditionFalse, smtpcredential.ReasonWebhookSecretInvalid)
		if !strings.Contains(msg, "must start with whsec_") || strings.Contains(msg, "MfKQ9r8G") {
			t.Errorf("message %q should say what is wrong without showing the value", msg)
		}
		w.update(hook, func() { hook.Data["secret"] = []byte(userSecret + "\n") })
		w.ready("mail", "shop", metav1.ConditionTrue, smtpcredential.ReasonReady)
		if got := string(w.secret("mail", "shop-smtp").Data["webhook-secret"]); got != userSecret {
			t.Errorf("webhook-secret = %q, want the user's secret", got)
		}
		w.credentialInConfig("shop.mail", func(c config.Credential) error {
			if c.Webhook == nil || c.Webhook.URL != hookURL || c.Webhook.Secret != userSecret || strings.Join(c.Webhook.Types, ",") != "bounced,delivered" {
				return fmt.Errorf("webhook %+v", c.Webhook)
			}
			return nil
		})
	})

	var generated string
	t.Run("without secretRef a secret is generated and kept", func(t *testing.T) {
		w.ready("mail", "billing", metav1.ConditionTrue, smtpcredential.ReasonReady)
		generated = string(w.secret("mail", "billing-smtp").Data["webhook-secret"])
		if err := attachment.CheckWebhookSecret(generated); err != nil {
			t.Errorf("generated secret: %v", err)
		}
		w.credentialInConfig("billing.mail", func(c config.Credential) error {
			if c.Webhook == nil || c.Webhook.Secret != generated || len(c.Webhook.Types) != 0 {
				return fmt.Errorf("webhook %+v", c.Webhook)
			}
			return nil
		})
	})

	t.Run("a target the pool does not allow is not Ready and gets no webhook", func(t *testing.T) {
		w.update(pool, func() { pool.Spec.Events.AllowedTargets = []string{".example.com", "10.20.0.0/16"} })
		msg := w.ready("mail", "shop", metav1.ConditionFalse, smtpcredential.ReasonWebhookTargetNotAllowed)
		for _, want := range []string{"hooks.shop.svc", "[.example.com, 10.20.0.0/16]"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q does not name %s", msg, want)
			}
		}
		w.eventually("a Warning Event on the credential", func() error {
			var list eventsv1.EventList
			if err := env.Client.List(w.ctx, &list, client.InNamespace("mail")); err != nil {
				return err
			}
			for _, e := range list.Items {
				if e.Regarding.Kind == "SMTPCredential" && e.Regarding.Name == "shop" && e.Reason == smtpcredential.ReasonWebhookTargetNotAllowed && e.Type == corev1.EventTypeWarning {
					if !strings.Contains(e.Note, "hooks.shop.svc") {
						return fmt.Errorf("the Event does not name the host: %s", e.Note)
					}
					return nil
				}
			}
			return fmt.Errorf("none among %d Events", len(list.Items))
		})
		w.credentialInConfig("shop.mail", func(c config.Credential) error {
			if c.Webhook != nil {
				return fmt.Errorf("webhook still rendered: %s", c.Webhook.URL)
			}
			return password.Verify(c.APIKeyHash, apiKey) // the login stays
		})
		w.update(pool, func() { pool.Spec.Events.AllowedTargets = []string{".shop.svc", ".svc.cluster.local"} })
		w.ready("mail", "shop", metav1.ConditionTrue, smtpcredential.ReasonReady)
		w.ready("mail", "billing", metav1.ConditionTrue, smtpcredential.ReasonReady)
	})

	t.Run("an unchanged world writes nothing", func(t *testing.T) {
		w.eventually("no writes for a second", func() error {
			w.writes.Reset()
			time.Sleep(time.Second)
			if n := w.writes.Total(); n != 0 {
				return fmt.Errorf("%d writes in flight:\n%s", n, w.writes)
			}
			return nil
		})
		for range 3 {
			if _, err := w.pool.Reconcile(w.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(pool)}); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*v1alpha1.SMTPCredential{shop, billing} {
				if _, err := w.creds.Reconcile(w.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(c)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n := w.writes.Total(); n != 0 {
			t.Errorf("three resyncs of an unchanged world wrote %d times:\n%s", n, w.writes)
		}
		if got := string(w.secret("mail", "billing-smtp").Data["webhook-secret"]); got != generated {
			t.Error("the generated webhook secret changed")
		}
	})

	t.Run("the rotate annotation rotates the API key, the old one works for the grace period", func(t *testing.T) {
		w.update(shop, func() { shop.Annotations = map[string]string{v1alpha1.AnnotationRotatePassword: "1"} })
		var fresh string
		w.eventually("a new API key", func() error {
			fresh = string(w.secret("mail", "shop-smtp").Data["api-key"])
			if fresh == apiKey {
				return errors.New("still the old key")
			}
			return nil
		})
		c := w.credentialInConfig("shop.mail", func(c config.Credential) error {
			if password.Verify(c.APIKeyHash, fresh) != nil {
				return errors.New("apiKeyHash is not the new key's")
			}
			if len(c.PreviousAPIKeyHashes) != 1 || password.Verify(c.PreviousAPIKeyHashes[0].Hash, apiKey) != nil {
				return fmt.Errorf("previousAPIKeyHashes %+v do not hold the old key", c.PreviousAPIKeyHashes)
			}
			return nil
		})
		if d := c.PreviousAPIKeyHashes[0].NotAfter.Sub(w.clock.Now()); d < time.Hour-time.Second || d > time.Hour+time.Second {
			t.Errorf("the old key works for %v, want the grace period (1h)", d)
		}
		if len(c.PreviousPasswordHashes) != 1 || !c.PreviousPasswordHashes[0].NotAfter.Equal(&c.PreviousAPIKeyHashes[0].NotAfter) {
			t.Errorf("the old password and key should expire together: %+v vs %+v", c.PreviousPasswordHashes, c.PreviousAPIKeyHashes)
		}
		var prev []attachment.PreviousPassword
		if err := json.Unmarshal([]byte(w.secret("mail", "shop-smtp").Annotations[attachment.AnnotationPreviousAPIKeys]), &prev); err != nil || len(prev) != 1 {
			t.Errorf("previous API keys annotation: %v %+v", err, prev)
		}

		w.clock.Step(time.Hour + 2*time.Second)
		for _, r := range []func() error{
			func() error {
				_, err := w.pool.Reconcile(w.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(pool)})
				return err
			},
			func() error {
				_, err := w.creds.Reconcile(w.ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(shop)})
				return err
			},
		} {
			if err := r(); err != nil {
				t.Fatal(err)
			}
		}
		w.credentialInConfig("shop.mail", func(c config.Credential) error {
			if len(c.PreviousAPIKeyHashes) != 0 || len(c.PreviousPasswordHashes) != 0 {
				return fmt.Errorf("after the grace period previous keys %+v, passwords %+v", c.PreviousAPIKeyHashes, c.PreviousPasswordHashes)
			}
			return password.Verify(c.APIKeyHash, fresh)
		})
		if _, ok := w.secret("mail", "shop-smtp").Annotations[attachment.AnnotationPreviousAPIKeys]; ok {
			t.Error("the expired key is still listed in the credential Secret")
		}
	})
}
