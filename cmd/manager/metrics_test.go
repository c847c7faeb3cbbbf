package main

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/certs"
	"mailroom.io/mailroom/internal/testutil/envtest"
	"mailroom.io/mailroom/internal/testutil/promtest"
)

// The status collector reports what the objects in a real API server say:
// one series per condition, the domain behind each SendingDomain, a pool's
// revisions and its certificate's expiry.
func TestStatusMetricsReportObjects(t *testing.T) {
	env, err := envtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()
	c := env.Client
	now := time.Now()

	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mail"}}); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.NewCA(rand.Reader, "test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.Issue(rand.Reader, ca, []string{"relay.example.test"}, certs.Server, now)
	if err != nil {
		t.Fatal(err)
	}
	expiry, err := certs.NotAfter(leaf.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := &v1alpha1.RelayPool{ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "transactional"},
		Spec: v1alpha1.RelayPoolSpec{Hostname: "relay.example.test"}}
	sd := &v1alpha1.SendingDomain{ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "example-com"},
		Spec: v1alpha1.SendingDomainSpec{Domain: "example.com", PoolRef: v1alpha1.PoolReference{Name: "transactional"}}}
	tls := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mail", Name: "transactional-relay-tls"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: leaf.Cert, corev1.TLSPrivateKeyKey: leaf.Key}}
	if err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, sd); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, tls); err != nil {
		t.Fatal(err)
	}
	set := func(conds *[]metav1.Condition, typ string, s metav1.ConditionStatus, reason string) {
		meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: "m"})
	}
	set(&pool.Status.Conditions, v1alpha1.ConditionReady, metav1.ConditionFalse, "NoReadyRelays")
	set(&pool.Status.Conditions, v1alpha1.RelayPoolConfigApplied, metav1.ConditionFalse, "NoReadyRelays")
	pool.Status.ConfigRevision, pool.Status.AppliedRevision = 7, 6
	if err := c.Status().Update(ctx, pool); err != nil {
		t.Fatal(err)
	}
	set(&sd.Status.Conditions, v1alpha1.SendingDomainDNSVerified, metav1.ConditionFalse, "DKIMRecordMissing")
	if err := c.Status().Update(ctx, sd); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(&statusMetrics{cached: c, live: c})
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mailroom_object_condition", []string{"kind", "RelayPool", "name", "transactional", "type", "Ready", "status", "False", "reason", "NoReadyRelays"}, 1},
		{"mailroom_object_condition", []string{"kind", "RelayPool", "name", "transactional", "type", "ConfigApplied", "status", "False"}, 1},
		{"mailroom_object_condition", []string{"kind", "SendingDomain", "namespace", "mail", "name", "example-com", "type", "DNSVerified", "status", "False", "reason", "DKIMRecordMissing"}, 1},
		{"mailroom_sendingdomain_info", []string{"namespace", "mail", "name", "example-com", "domain", "example.com", "pool_namespace", "mail", "pool", "transactional"}, 1},
		{"mailroom_relaypool_config_revision", []string{"name", "transactional", "revision", "rendered"}, 7},
		{"mailroom_relaypool_config_revision", []string{"name", "transactional", "revision", "applied"}, 6},
		{"mailroom_relaypool_tls_certificate_expiry_timestamp_seconds", []string{"name", "transactional", "secret", "transactional-relay-tls"}, float64(expiry.Unix())},
		{"mailroom_status_metrics_errors", []string{"what", "tls-secrets"}, 0},
		{"mailroom_status_metrics_errors", []string{"what", "sendingdomains"}, 0},
	} {
		if got := promtest.Value(t, reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
