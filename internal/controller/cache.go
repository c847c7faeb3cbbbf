package controller

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"mailroom.io/mailroom/internal/controller/apply"
)

// CacheOptions is how the manager caches: Secrets only when mailroom wrote
// them (labelled apply.ManagedByLabel=apply.ManagedByValue, which
// apply.Object sets on every Secret), ConfigMaps likewise, Pods only when they are relays; every other kind it reads in full.
// A cluster's other Secrets (thousands, in some) never enter the manager's
// memory; a Secret mailroom only reads, such as a user's TLS Secret,
// smarthost credentials or a DKIM key made by hand, is read live through
// the manager's APIReader (mgr.GetAPIReader()), since the cached client
// would not find it.
//
// With namespaces given, namespaced objects are watched (and reconciled)
// only there; objects elsewhere are invisible to the manager.
func CacheOptions(namespaces ...string) cache.Options {
	var only map[string]cache.Config
	for _, ns := range namespaces {
		if only == nil {
			only = map[string]cache.Config{}
		}
		only[ns] = cache.Config{}
	}
	return cache.Options{
		DefaultNamespaces: only,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{apply.ManagedByLabel: apply.ManagedByValue})},
			// The pool CA ConfigMaps mailroom writes, not the cluster's.
			&corev1.ConfigMap{}: {Label: labels.SelectorFromSet(labels.Set{apply.ManagedByLabel: apply.ManagedByValue})},
			// Only relay pods: the RelayPool controller reads their readiness.
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{"app.kubernetes.io/name": "mailroom-relay"})},
		},
	}
}
