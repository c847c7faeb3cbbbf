// Package relayconfig renders a RelayPool's relay configuration (the file
// format of internal/relay/config) from the objects attached to the pool.
// It is pure: the same inputs give byte-identical output, so an unchanged
// world never changes a Secret, never bumps the revision and never makes
// the relays reload.
//
// # Layout in Secrets
//
// A pool's configuration lives in a fixed set of Secrets projected into one
// directory of every relay pod (/etc/mailroom/config):
//
//	<pool>-relay-config        relay.yaml (listeners, TLS, limits, delivery,
//	                           peers, drain list, and the sha256 of every
//	                           shard), smarthost.yaml when the smarthost
//	                           needs a login
//	<pool>-relay-config-00…15  shard-NN.json: the domains and credentials
//	                           whose names hash to shard NN, and the DKIM
//	                           private keys of those domains as
//	                           dkim.<domain>.<selector>.pem
//
// The set of Secrets never changes, so adding the next domain or
// credential changes Secret data only: kubelet refreshes the projected
// volume, the relay reloads it, and no pod rolls. A Secret holds at most
// 1 MiB; with 16 shards the pool holds about 16 MiB, which fits 1,000
// domains with RSA-2048 keys (about 1.7 KiB each, twice during rotation)
// and 5,000 credentials (about 250 bytes each) several times over. A shard
// that would exceed ShardCapacity is not written and the pool reports
// it (CapacityExceeded).
//
// # Revisions
//
// Every change of any Secret's data bumps the revision by one. The main file
// carries it; each shard Secret is annotated with the revision at which its
// data last changed, so "is this credential in effect?" is answered by
// comparing the shard's revision with the oldest revision the ready relays
// report (RelayPool status.appliedRevision).
package relayconfig
