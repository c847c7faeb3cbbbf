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

// login is what the credential Secret holds about the password.
type login struct {
	Password string
	Hash     string
	Previous []attachment.PreviousPassword
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
	return l, true
}

// nextLogin decides the login to write: the existing one, a rotated one
// when the rotate annotation changed, or a new one. Expired previous
// passwords are dropped. rotated reports a rotation.
func nextLogin(cred *v1alpha1.SMTPCredential, existing *corev1.Secret, now time.Time, random io.Reader) (l login, rotated bool, err error) {
	want := cred.Annotations[v1alpha1.AnnotationRotatePassword]
	cur, ok := readLogin(existing)
	switch {
	case !ok:
		pw, hash, err := NewPassword(random)
		if err != nil {
			return login{}, false, err
		}
		return login{Password: pw, Hash: hash, Acted: want, IssuedAt: now.UTC().Truncate(time.Second)}, false, nil
	case cur.Acted != want && want != "":
		pw, hash, err := NewPassword(random)
		if err != nil {
			return login{}, false, err
		}
		grace := 24 * time.Hour
		if g := cred.Spec.PasswordRotation.GracePeriod; g != nil {
			grace = g.Duration
		}
		l = login{Password: pw, Hash: hash, Acted: want, IssuedAt: now.UTC().Truncate(time.Second)}
		if grace > 0 {
			// Rounded up to the second the API stores: never shorter than asked.
			until := now.Add(grace + time.Second - 1).UTC().Truncate(time.Second)
			l.Previous = append(l.Previous, attachment.PreviousPassword{Hash: cur.Hash, NotAfter: metav1.NewTime(until)})
		}
		l.Previous = append(l.Previous, live(cur.Previous, now)...)
		return l, true, nil
	default:
		cur.Previous = live(cur.Previous, now)
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
}

// Secret is the app-facing Secret: everything an application needs to
// send, as env vars or files.
func Secret(cred *v1alpha1.SMTPCredential, l login, ep endpoint) (*corev1.Secret, error) {
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
	return s, nil
}

// nextExpiry is when the earliest previous password stops working.
func nextExpiry(l login) (time.Time, bool) {
	var t time.Time
	for _, p := range l.Previous {
		if t.IsZero() || p.NotAfter.Before(&metav1.Time{Time: t}) {
			t = p.NotAfter.Time
		}
	}
	return t, !t.IsZero()
}

func describe(cred *v1alpha1.SMTPCredential) string {
	return fmt.Sprintf("%s/%s", cred.Namespace, cred.Name)
}
