package relaypool

import (
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/certs"
	"mailroom.io/mailroom/internal/relayconfig"
)

// serviceNames are the names a relay is reached by inside the cluster.
func serviceNames(pool *v1alpha1.RelayPool) []string {
	svc := relayconfig.ServiceName(pool.Name)
	return []string{pool.Spec.Hostname, svc, svc + "." + pool.Namespace, svc + "." + pool.Namespace + ".svc", relayconfig.Endpoint(pool)}
}

// peerNames are the names pods use for each other on the peer path.
func peerNames(pool *v1alpha1.RelayPool) []string {
	h := relayconfig.HeadlessServiceName(pool.Name)
	return []string{"*." + h + "." + pool.Namespace + ".svc", "*." + h + "." + pool.Namespace + ".svc.cluster.local"}
}

// issued is the certificate material a pool needs, and when to look again.
type issued struct {
	ca, serving, peer *corev1.Secret
	caPEM             []byte
	renewAt           time.Time
	events            []string
}

// tlsSecret builds a kubernetes.io/tls Secret.
func tlsSecret(pool *v1alpha1.RelayPool, name string, p certs.Pair, ca []byte) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: objMeta(pool, name), Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: p.Cert, corev1.TLSPrivateKeyKey: p.Key}}
	if ca != nil {
		s.Data["ca.crt"] = ca
	}
	return s
}

func pairOf(s *corev1.Secret) certs.Pair {
	if s == nil {
		return certs.Pair{}
	}
	return certs.Pair{Cert: s.Data[corev1.TLSCertKey], Key: s.Data[corev1.TLSPrivateKeyKey]}
}

// certificates keeps the pool CA, the serving certificate (unless the user
// names one) and the peer certificate valid: existing ones are kept until
// a third of their lifetime is left, so an unchanged world issues nothing.
func certificates(w *world, random io.Reader) (*issued, error) {
	out := &issued{}
	ca := pairOf(w.ca)
	due, err := certs.CheckCA(ca, w.now)
	if err != nil {
		if w.ca != nil {
			out.events = append(out.events, fmt.Sprintf("issuing a new pool CA: the old one %v", err))
		}
		if ca, err = certs.NewCA(random, "mailroom relay CA "+w.pool.Namespace+"/"+w.pool.Name, w.now); err != nil {
			return nil, err
		}
		due = certs.RenewAt(w.now, w.now.Add(certs.CALifetime))
	}
	out.renewAt = due
	out.ca = tlsSecret(w.pool, CASecretName(w.pool.Name), ca, nil)
	out.caPEM = ca.Cert

	leaf := func(cur *corev1.Secret, name string, names []string, usage certs.Usage) (*corev1.Secret, error) {
		p := pairOf(cur)
		due, err := certs.Check(p, ca.Cert, names, w.now)
		if err != nil {
			if cur != nil {
				out.events = append(out.events, fmt.Sprintf("issuing %s: the current certificate %v", name, err))
			}
			if p, err = certs.Issue(random, ca, names, usage, w.now); err != nil {
				return nil, err
			}
			due = certs.RenewAt(w.now, w.now.Add(certs.LeafLifetime))
		}
		if due.Before(out.renewAt) {
			out.renewAt = due
		}
		return tlsSecret(w.pool, name, p, ca.Cert), nil
	}
	if w.pool.Spec.Submission.TLS.SecretName == "" {
		if out.serving, err = leaf(w.tls, w.pool.Name+"-relay-tls", serviceNames(w.pool), certs.Server); err != nil {
			return nil, err
		}
	}
	if out.peer, err = leaf(w.peer, PeerSecretName(w.pool.Name), peerNames(w.pool), certs.Server|certs.Client); err != nil {
		return nil, err
	}
	return out, nil
}
