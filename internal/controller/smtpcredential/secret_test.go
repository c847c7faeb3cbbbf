package smtpcredential

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/apikey"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/relay/password"
)

var t0 = time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)

func cred(grace time.Duration, rotate string) *v1alpha1.SMTPCredential {
	c := &v1alpha1.SMTPCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop"}}
	c.Spec.PasswordRotation.GracePeriod = &metav1.Duration{Duration: grace}
	if rotate != "" {
		c.Annotations = map[string]string{v1alpha1.AnnotationRotatePassword: rotate}
	}
	return c
}

func mustSecret(t *testing.T, c *v1alpha1.SMTPCredential, l login) *corev1.Secret {
	t.Helper()
	s, err := Secret(c, l, endpoint{Host: "h", Port: 587}, hookSecret{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// written is the Secret a login renders to, as the next reconcile reads it.
func written(t *testing.T, c *v1alpha1.SMTPCredential, l login) login {
	t.Helper()
	back, ok := readLogin(mustSecret(t, c, l))
	if !ok {
		t.Fatal("a written login does not read back")
	}
	return back
}

func TestAPIKeyIssuedAndRotatedWithThePassword(t *testing.T) {
	c := cred(time.Hour, "")
	first, rotated, err := nextLogin(c, nil, t0, nil)
	if err != nil || rotated {
		t.Fatalf("first login: rotated %v, %v", rotated, err)
	}
	if user, ok := apikey.User(first.APIKey); !ok || user != "shop.shop" {
		t.Errorf("API key %q does not name shop.shop", first.APIKey)
	}
	if password.Verify(first.APIKeyHash, first.APIKey) != nil {
		t.Error("the API key's hash does not verify it")
	}
	first = written(t, c, first)

	same, rotated, _ := nextLogin(c, mustSecret(t, c, first), t0.Add(time.Minute), nil)
	if rotated || same.APIKey != first.APIKey || same.Password != first.Password {
		t.Error("an unchanged credential got a new key or password")
	}

	c = cred(time.Hour, "1")
	next, rotated, err := nextLogin(c, mustSecret(t, c, first), t0, nil)
	if err != nil || !rotated {
		t.Fatalf("rotation: rotated %v, %v", rotated, err)
	}
	if next.APIKey == first.APIKey || next.Password == first.Password {
		t.Error("the rotate annotation left the key or the password")
	}
	if len(next.PreviousAPIKeys) != 1 || next.PreviousAPIKeys[0].Hash != first.APIKeyHash || !next.PreviousAPIKeys[0].NotAfter.Time.Equal(t0.Add(time.Hour)) {
		t.Errorf("previous API keys %+v, want the old hash until %v", next.PreviousAPIKeys, t0.Add(time.Hour))
	}
	if len(next.Previous) != 1 || !next.Previous[0].NotAfter.Equal(&next.PreviousAPIKeys[0].NotAfter) {
		t.Errorf("the old password %+v should expire with the old key", next.Previous)
	}
	next = written(t, c, next)
	if len(next.PreviousAPIKeys) != 1 {
		t.Errorf("the previous key does not survive the Secret: %+v", next.PreviousAPIKeys)
	}
	if e, ok := nextExpiry(next); !ok || !e.Equal(t0.Add(time.Hour)) {
		t.Errorf("nextExpiry = %v %v", e, ok)
	}

	after, _, _ := nextLogin(c, mustSecret(t, c, next), t0.Add(time.Hour), nil)
	if len(after.PreviousAPIKeys) != 0 || len(after.Previous) != 0 {
		t.Errorf("at notAfter the old key and password still work: %+v %+v", after.PreviousAPIKeys, after.Previous)
	}
}

func TestNoGraceStopsTheOldKeyAtOnce(t *testing.T) {
	c := cred(0, "")
	first, _, _ := nextLogin(c, nil, t0, nil)
	c = cred(0, "now")
	next, rotated, _ := nextLogin(c, mustSecret(t, c, written(t, c, first)), t0, nil)
	if !rotated || len(next.PreviousAPIKeys) != 0 {
		t.Errorf("grace 0: rotated %v, previous keys %+v", rotated, next.PreviousAPIKeys)
	}
}

// A Secret written before the HTTP API has a password and no key: the key
// is added, the password kept, nothing counts as a rotation.
func TestKeyAddedToAnOlderSecret(t *testing.T) {
	c := cred(time.Hour, "")
	l, _, _ := nextLogin(c, nil, t0, nil)
	s := mustSecret(t, c, l)
	delete(s.Data, attachment.KeyAPIKey)
	delete(s.Annotations, attachment.AnnotationAPIKeyHash)
	next, rotated, err := nextLogin(c, s, t0, nil)
	if err != nil || rotated || next.Password != l.Password || next.APIKey == "" || len(next.PreviousAPIKeys) != 0 {
		t.Errorf("upgrade: rotated %v, same password %v, key %q, previous %+v, %v", rotated, next.Password == l.Password, next.APIKey, next.PreviousAPIKeys, err)
	}
	// A key that does not match its hash is replaced the same way.
	s.Data[attachment.KeyAPIKey] = []byte(l.APIKey)
	s.Annotations[attachment.AnnotationAPIKeyHash] = l.Hash
	if again, _, _ := nextLogin(c, s, t0, nil); again.APIKey == l.APIKey {
		t.Error("a key whose hash does not verify was kept")
	}
}

func TestSecretCarriesTheAPIAndWebhook(t *testing.T) {
	c := cred(time.Hour, "")
	l, _, _ := nextLogin(c, nil, t0, nil)
	hook := hookSecret{Value: attachment.NewWebhookSecret([32]byte{7}), Source: sourceGenerated}
	s, err := Secret(c, l, endpoint{Host: "h", Port: 587, APIURL: "https://tx-relay.mail.svc:443"}, hook)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"api-key": l.APIKey, "api-url": "https://tx-relay.mail.svc:443", "webhook-secret": hook.Value} {
		if got := string(s.Data[key]); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if g := generatedHook(s); g != hook {
		t.Errorf("the generated secret does not read back: %+v", g)
	}
	s.Annotations[annotationWebhookSource] = "secret/shop-webhook/secret"
	if g := generatedHook(s); g.Value != "" {
		t.Error("a secret copied from the user's Secret is taken for a generated one")
	}
	s, _ = Secret(c, l, endpoint{Host: "h", Port: 587}, hookSecret{})
	for _, key := range []string{"api-url", "webhook-secret"} {
		if _, ok := s.Data[key]; ok {
			t.Errorf("%s written without an API or a webhook", key)
		}
	}
}
