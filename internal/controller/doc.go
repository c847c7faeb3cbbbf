// Package controller is the home of mailroom's reconcilers, one folder per
// kind, and of what they share:
//
//	sendingdomain/   SendingDomain: DKIM keys, the DNSEndpoint of its
//	                 records, DNS verification, readiness (a file each)
//	smtpcredential/  SMTPCredential: the application's Secret, password
//	                 rotation, Ready when the relays accept the login
//	relaypool/       RelayPool: the relay config Secrets, StatefulSet,
//	                 Services, PodDisruptionBudget, NetworkPolicy, TLS
//	attachment/      which domains and credentials a pool admits, shared
//	                 by the RelayPool and SMTPCredential controllers
//	conditions/      Ready from ordered pure checks, the kstatus conditions
//	                 Reconciling and Stalled, observedGeneration on each
//	apply/           server-side apply under the field owner "mailroom",
//	                 skipping writes that would change nothing, status by
//	                 apply, the managed-by label on every Secret written
//
// Every reconciler has one shape: gather its inputs into one value, render
// desired objects with pure functions of it, apply them server-side (an
// unchanged world makes zero writes), and set conditions from ordered
// checks. This package itself holds the manager's cache options
// (CacheOptions: of Secrets, only those mailroom writes are cached; the
// ones it only reads are read live) and the RBAC every reconciler needs.
package controller

// Every reconciler records Events on the objects it manages.
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
