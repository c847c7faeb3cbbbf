package main

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"mailroom.io/mailroom/api/v1alpha1"
	"mailroom.io/mailroom/internal/certs"
	"mailroom.io/mailroom/internal/controller/relaypool"
)

// statusMetrics exposes the mailroom objects' status on the manager's
// /metrics, read at scrape time: the relays know their queues, only the
// manager knows whether a domain's records resolve or a pool's config is
// applied everywhere. The dashboard and the alerts in
// charts/mailroom/files use these series.
type statusMetrics struct {
	cached client.Reader // the manager's cache: the mailroom kinds
	live   client.Reader // the API server: TLS Secrets mailroom did not write
}

var (
	conditionDesc = prometheus.NewDesc("mailroom_object_condition",
		"1 for the current status of each condition of each mailroom object (kind, namespace, name, type, status True/False/Unknown, reason).",
		[]string{"kind", "namespace", "name", "type", "status", "reason"}, nil)
	domainInfoDesc = prometheus.NewDesc("mailroom_sendingdomain_info",
		"1 per SendingDomain: the DNS domain it names and its pool.",
		[]string{"namespace", "name", "domain", "pool_namespace", "pool"}, nil)
	poolRevisionDesc = prometheus.NewDesc("mailroom_relaypool_config_revision",
		"Relay config revision of a pool: rendered (desired) and applied (the oldest any ready relay runs).",
		[]string{"namespace", "name", "revision"}, nil)
	certExpiryDesc = prometheus.NewDesc("mailroom_relaypool_tls_certificate_expiry_timestamp_seconds",
		"When the submission certificate a pool's relays serve expires (NotAfter of the first certificate in its TLS Secret).",
		[]string{"namespace", "name", "secret"}, nil)
	scrapeErrorDesc = prometheus.NewDesc("mailroom_status_metrics_errors",
		"1 when the last scrape could not list a kind or read a TLS Secret (what failed is logged).",
		[]string{"what"}, nil)
)

// registerStatusMetrics adds the status collector to controller-runtime's
// registry, served on --metrics-bind-address.
func registerStatusMetrics(mgr ctrl.Manager) error {
	err := ctrlmetrics.Registry.Register(&statusMetrics{cached: mgr.GetClient(), live: mgr.GetAPIReader()})
	if errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		// A second manager in one process (tests): the first one's
		// collector reports.
		return nil
	}
	return err
}

func (m *statusMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{conditionDesc, domainInfoDesc, poolRevisionDesc, certExpiryDesc, scrapeErrorDesc} {
		ch <- d
	}
}

func (m *statusMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	failed := func(what string, err error) {
		v := 0.0
		if err != nil {
			v = 1
			ctrl.Log.WithName("status-metrics").Error(err, "scrape", "what", what)
		}
		gauge(scrapeErrorDesc, v, what)
	}
	conds := func(kind string, obj client.Object, cs []metav1.Condition) {
		for _, c := range cs {
			gauge(conditionDesc, 1, kind, obj.GetNamespace(), obj.GetName(), c.Type, string(c.Status), c.Reason)
		}
	}

	var pools v1alpha1.RelayPoolList
	err := m.cached.List(ctx, &pools)
	failed("relaypools", err)
	var certErr error
	for i := range pools.Items {
		p := &pools.Items[i]
		conds("RelayPool", p, p.Status.Conditions)
		gauge(poolRevisionDesc, float64(p.Status.ConfigRevision), p.Namespace, p.Name, "rendered")
		gauge(poolRevisionDesc, float64(p.Status.AppliedRevision), p.Namespace, p.Name, "applied")
		name := relaypool.TLSSecretName(p)
		var s corev1.Secret
		if err := m.live.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: name}, &s); err != nil {
			if client.IgnoreNotFound(err) != nil {
				certErr = err
			}
			continue
		}
		if t, err := certs.NotAfter(s.Data[corev1.TLSCertKey]); err == nil {
			gauge(certExpiryDesc, float64(t.Unix()), p.Namespace, p.Name, name)
		}
	}
	failed("tls-secrets", certErr)

	var domains v1alpha1.SendingDomainList
	err = m.cached.List(ctx, &domains)
	failed("sendingdomains", err)
	for i := range domains.Items {
		d := &domains.Items[i]
		conds("SendingDomain", d, d.Status.Conditions)
		poolNS := d.Spec.PoolRef.Namespace
		if poolNS == "" {
			poolNS = d.Namespace
		}
		gauge(domainInfoDesc, 1, d.Namespace, d.Name, d.Spec.Domain, poolNS, d.Spec.PoolRef.Name)
	}

	var creds v1alpha1.SMTPCredentialList
	err = m.cached.List(ctx, &creds)
	failed("smtpcredentials", err)
	for i := range creds.Items {
		conds("SMTPCredential", &creds.Items[i], creds.Items[i].Status.Conditions)
	}
}
