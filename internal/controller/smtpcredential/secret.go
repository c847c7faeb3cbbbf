package smtpcredential

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/apikey"
	"mailroom.io/mailroom/internal/controller/attachment"
	"mailroom.io/mailroom/internal/relay/password"
)

// passwordBytes of randomness: 256 bits.
const passwordBytes = 32

// NewPassword returns a fresh password and its hash.
func NewPassword(random io.Reader) (pw, hash string, err error) {
	if random == nil {
		random = rand.Reader
	}
	b := make([]byte, passwordBytes)
	if _, err := io.ReadFull(random, b); err != nil {
		return "", "", err
	}
	pw = base64.RawURLEncoding.EncodeToString(b)
	hash, err = password.HashToken(pw)
	return pw, hash, err
}

// newAPIKey returns a fresh HTTP API key for username and its hash.
func newAPIKey(username string) (key, hash string, err error) {
	if key, err = apikey.New(username); err != nil {
		return "", "", err
	}
	hash, err = password.HashToken(key)
	return key, hash, err
}

// login is what the credential Secret holds about the password and the
// HTTP API key, which are issued and rotated together.
type login struct {
	Password string
	Hash     string
	Previous []attachment.PreviousPassword
	// APIKey is the HTTP API key; PreviousAPIKeys work until their
	// notAfter like Previous.
	APIKey          string
	APIKeyHash      string
	PreviousAPIKeys []attachment.PreviousPassword
	// Acted is the rotate annotation value last acted on.
	Acted string
	// IssuedAt is when the current password was made.
	IssuedAt time.Time
}

const (
	annotationIssuedAt = "mailroom.io/password-issued-at"
)

// readLogin reads the login from an existing Secret; ok is false when the
// Secret holds no usable password.
func readLogin(s *corev1.Secret) (login, bool) {
	if s == nil {
		return login{}, false
	}
	l := login{
		Password: string(s.Data["password"]),
		Hash:     s.Annotations[attachment.AnnotationPasswordHash],
		Previous: attachment.ParsePrevious(s.Annotations[attachment.AnnotationPreviousPasswords]),
		Acted:    s.Annotations[v1alpha1.AnnotationRotatePassword],
	}
	l.IssuedAt, _ = time.Parse(time.RFC3339, s.Annotations[annotationIssuedAt])
	if l.Password == "" || l.Hash == "" || password.Verify(l.Hash, l.Password) != nil {
		return login{}, false
	}
	// A Secret written before the HTTP API (or damaged) lacks a usable
	// key: the key is issued then, without touching the password.
	key, hash := string(s.Data[attachment.KeyAPIKey]), s.Annotations[attachment.AnnotationAPIKeyHash]
	if user, ok := apikey.User(key); ok && user == string(s.Data["username"]) && hash != "" && password.Verify(hash, key) == nil {
		l.APIKey, l.APIKeyHash = key, hash
		l.PreviousAPIKeys = attachment.ParsePrevious(s.Annotations[attachment.AnnotationPreviousAPIKeys])
	}
	return l, true
}

// nextLogin decides the login to write: the existing one, a rotated one
// when the rotate annotation changed, or a new one. Expired previous
// passwords are dropped. rotated reports a rotation.
func nextLogin(cred *v1alpha1.SMTPCredential, existing *corev1.Secret, now time.Time, random io.Reader) (l login, rotated bool, err error) {
	want := cred.Annotations[v1alpha1.AnnotationRotatePassword]
	user := attachment.Username(cred)
	cur, ok := readLogin(existing)
	fresh := func() (login, error) {
		pw, hash, err := NewPassword(random)
		if err != nil {
			return login{}, err
		}
		key, keyHash, err := newAPIKey(user)
		if err != nil {
			return login{}, err
		}
		return login{Password: pw, Hash: hash, APIKey: key, APIKeyHash: keyHash, Acted: want, IssuedAt: now.UTC().Truncate(time.Second)}, nil
	}
	switch {
	case !ok:
		l, err := fresh()
		return l, false, err
	case cur.Acted != want && want != "":
		if l, err = fresh(); err != nil {
			return login{}, false, err
		}
		grace := 24 * time.Hour
		if g := cred.Spec.PasswordRotation.GracePeriod; g != nil {
			grace = g.Duration
		}
		if grace > 0 {
			// Rounded up to the second the API stores: never shorter than asked.
			until := metav1.NewTime(now.Add(grace + time.Second - 1).UTC().Truncate(time.Second))
			l.Previous = append(l.Previous, attachment.PreviousPassword{Hash: cur.Hash, NotAfter: until})
			if cur.APIKeyHash != "" {
				l.PreviousAPIKeys = append(l.PreviousAPIKeys, attachment.PreviousPassword{Hash: cur.APIKeyHash, NotAfter: until})
			}
		}
		l.Previous = append(l.Previous, live(cur.Previous, now)...)
		l.PreviousAPIKeys = append(l.PreviousAPIKeys, live(cur.PreviousAPIKeys, now)...)
		return l, true, nil
	default:
		cur.Previous = live(cur.Previous, now)
		cur.PreviousAPIKeys = live(cur.PreviousAPIKeys, now)
		if cur.APIKey == "" {
			if cur.APIKey, cur.APIKeyHash, err = newAPIKey(user); err != nil {
				return login{}, false, err
			}
		}
		return cur, false, nil
	}
}

func live(prev []attachment.PreviousPassword, now time.Time) []attachment.PreviousPassword {
	return slices.DeleteFunc(slices.Clone(prev), func(p attachment.PreviousPassword) bool { return !now.Before(p.NotAfter.Time) })
}

// endpoint is where the app connects.
type endpoint struct {
	Host string
	Port int32
	CA   []byte // PEM, when the operator issued the pool's certificate
	// APIURL is the HTTP API's base URL; empty when the pool serves none.
	APIURL string
}

// hookSecret is the webhook signing secret the credential Secret carries.
type hookSecret struct {
	Value string // empty: none
	// Source is "generated" or "secret/<name>/<key>" (the user's Secret it
	// was copied from), so a generated secret is kept and a copied one
	// follows its origin.
	Source string
}

const (
	annotationWebhookSource = "mailroom.io/webhook-secret-source"
	sourceGenerated         = "generated"
)

// Secret is the app-facing Secret: everything an application needs to
// send, as env vars or files.
func Secret(cred *v1alpha1.SMTPCredential, l login, ep endpoint, hook hookSecret) (*corev1.Secret, error) {
	user := attachment.Username(cred)
	u := url.URL{Scheme: "smtp", User: url.UserPassword(user, l.Password), Host: ep.Host + ":" + strconv.Itoa(int(ep.Port))}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: attachment.SecretName(cred), Namespace: cred.Namespace,
			Labels: map[string]string{
				attachment.LabelManagedBy:    attachment.ManagedBy,
				"mailroom.io/smtpcredential": cred.Name,
			},
			Annotations: map[string]string{
				attachment.AnnotationPasswordHash: l.Hash,
				annotationIssuedAt:                l.IssuedAt.UTC().Format(time.RFC3339),
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			"host":     []byte(ep.Host),
			"port":     []byte(strconv.Itoa(int(ep.Port))),
			"username": []byte(user),
			"password": []byte(l.Password),
			// smtp:// with port 587 means STARTTLS before AUTH.
			"url": []byte(u.String()),
		},
	}
	if l.Acted != "" {
		s.Annotations[v1alpha1.AnnotationRotatePassword] = l.Acted
	}
	if len(l.Previous) > 0 {
		b, err := json.Marshal(l.Previous)
		if err != nil {
			return nil, err
		}
		s.Annotations[attachment.AnnotationPreviousPasswords] = string(b)
	}
	if len(ep.CA) > 0 {
		s.Data["ca.crt"] = ep.CA
	}
	if l.APIKey != "" {
		s.Data[attachment.KeyAPIKey] = []byte(l.APIKey)
		s.Annotations[attachment.AnnotationAPIKeyHash] = l.APIKeyHash
	}
	if len(l.PreviousAPIKeys) > 0 {
		b, err := json.Marshal(l.PreviousAPIKeys)
		if err != nil {
			return nil, err
		}
		s.Annotations[attachment.AnnotationPreviousAPIKeys] = string(b)
	}
	if ep.APIURL != "" {
		s.Data[attachment.KeyAPIURL] = []byte(ep.APIURL)
	}
	if hook.Value != "" {
		s.Data[attachment.KeyWebhookSecret] = []byte(hook.Value)
		s.Annotations[annotationWebhookSource] = hook.Source
	}
	return s, nil
}

// nextExpiry is when the earliest previous password or API key stops
// working.
func nextExpiry(l login) (time.Time, bool) {
	var t time.Time
	for _, p := range slices.Concat(l.Previous, l.PreviousAPIKeys) {
		if t.IsZero() || p.NotAfter.Before(&metav1.Time{Time: t}) {
			t = p.NotAfter.Time
		}
	}
	return t, !t.IsZero()
}

func describe(cred *v1alpha1.SMTPCredential) string {
	return fmt.Sprintf("%s/%s", cred.Namespace, cred.Name)
}
