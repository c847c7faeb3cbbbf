// Package config is the relay's configuration file: its Go types, defaults
// and validation. The operator renders this file into the relay's config
// Secret; `relay --config relay.yaml` reads it; the relay reloads it when it
// changes. Secrets are referenced by file (TLS key, DKIM keys, smarthost
// credentials) or stored only as hashes (SMTP passwords), so the file
// itself can be logged or diffed without leaking anything.
//
// Load parses strictly (an unknown or misspelt field is an error), applies
// defaults and calls Validate, whose errors name the offending field, e.g.
// "credentials[1].allowedSenders[0]: Invalid value: ...". Validate does no
// I/O; the files a config refers to are read when the relay applies it.
//
// # Revision and shards
//
// The operator renders a main file with a revision and an include list of
// shard files, all in one projected volume (one Secret each), because one
// Secret holds at most 1 MiB:
//
//	revision: 17
//	include:
//	  - file: /etc/mailroom/config/shard-00.yaml
//	    sha256: 5f0c…   # lower-case hex sha256 of the file's bytes
//
// A shard holds only "domains:" and "credentials:", with exactly the
// schemas below; they are appended to the main file's lists (in include
// order) and validated as one configuration. Errors in a shard name it,
// e.g. "include[1](/etc/mailroom/config/shard-01.yaml).credentials[3].username:
// Duplicate value: "shop.shop": also at include[0](…).credentials[7]". DKIM
// privateKeyFile paths in shards point at files of the same volume
// (dkim.<domain>.<selector>.pem).
//
// Load returns an error wrapping ErrInconsistent while an include file is
// missing or its sha256 differs from the listed one (Kubernetes updates the
// Secrets of a projected volume one by one). The relay then keeps the
// configuration it runs, or at startup waits, logging "waiting for
// consistent config shards", and tries again when files change. A
// configuration counts as applied, and its revision is reported (GET
// /status, mailroom_relay_config_revision), only once it loaded in full.
// configDigest on /status is ComputeDigest(main file bytes, include sha256s):
// sha256 over sha256(main) followed by each include's sha256, as hex.
//
// A single file with no include list is a complete configuration, as for
// `relay --config relay.yaml` by hand (revision 0).
//
// # Shutdown budget
//
// ShutdownBudget(c) = limits.shutdownDelay + limits.shutdownGrace +
// delivery.shutdownGrace + ShutdownMargin (10s), 60s with the defaults:
// the longest the shutdown sequence after SIGTERM takes. The operator
// derives the pod's terminationGracePeriodSeconds from it. The sequence:
// readiness off at once; still accepting for shutdownDelay (Kubernetes
// removes a terminating pod from the Service endpoints asynchronously);
// listeners closed, idle sessions 421, sessions in a transaction finish
// within limits.shutdownGrace; deliveries in progress finish within
// delivery.shutdownGrace; the queue closes.
//
// # Sizes and durations
//
// Sizes are Kubernetes quantities ("25Mi", "1Gi", or plain bytes) and
// durations are Go durations ("90s", "5m", "120h"), as in the CRDs.
//
// # A complete file
//
// hostname, the tls files and queue.directory are required; the trusted
// network, domain, credential, proxyProtocol, peer and drain are examples
// (empty or off by default); every other value shown is the default:
//
//	# Name used in the SMTP greeting, EHLO reply and Received: fields.
//	hostname: relay.example.com
//	revision: 0             # set by the operator; reported on /status
//	include: []             # shard files, see above
//
//	listeners:
//	  submission: ":587"    # STARTTLS (RFC 3207); AUTH only after TLS
//	  submissions: ":465"   # implicit TLS (RFC 8314)
//	  http: ":8080"         # /metrics, /healthz, /readyz, /status
//	  admin: "127.0.0.1:8081"   # admin API; loopback only
//	  peer: ":8443"         # pool peer path; default only when peer is set
//
//	tls:                    # served on both SMTP listeners; TLS 1.2 or newer
//	  certFile: /etc/mailroom/tls/tls.crt
//	  keyFile: /etc/mailroom/tls/tls.key
//	  minVersion: "1.2"     # "1.2" or "1.3"
//
//	limits:
//	  maxMessageSize: 25Mi       # SIZE; larger messages get 552 5.3.4
//	  maxRecipients: 100         # per message; more get 452 4.5.3
//	  maxConnections: 1000       # all clients together
//	  maxConnectionsPerIP: 100   # one client address
//	  commandTimeout: 5m         # waiting for a command (RFC 5321 4.5.3.2)
//	  dataTimeout: 3m            # waiting for the next block of DATA
//	  authFailures: 5            # failed AUTHs per client IP ...
//	  authFailureWindow: 5m      # ... per window before AUTH is refused
//	  shutdownDelay: 5s          # on SIGTERM, keep accepting this long with readiness off
//	  shutdownGrace: 25s         # then how long sessions may finish
//
//	# Clients allowed to submit without AUTH, each network bound to its own
//	# senders. Empty by default; meant for legacy applications only.
//	trustedNetworks:
//	  - name: legacy-billing
//	    cidrs: [10.42.7.0/24]
//	    allowedSenders: [billing.example.com]
//	    limits: {messagesPerMinute: 0, messagesPerDay: 0, recipientsPerMessage: 0}
//
//	# Domains the relay signs for. Mail is signed with every key listed for
//	# the From: domain (or the closest listed parent domain).
//	domains:
//	  - name: example.com
//	    keys:
//	      - selector: mr-20261125
//	        algorithm: RSA2048   # RSA2048 | RSA3072 | RSA4096 | Ed25519
//	        privateKeyFile: /etc/mailroom/dkim/example-com/mr-20261125.pem
//
//	credentials:
//	  - username: shop.shop
//	    # $mr-sha256$ (password.HashToken, for generated secrets only),
//	    # bcrypt or argon2id (PHC string); never the password itself.
//	    passwordHash: "$2a$10$px0zTPYlw26dgyZYlGwb4.ClsLZiSnEqx3vW/M/JRTtkIq2CMBrIi"
//	    # Rotated-out passwords keep working until notAfter (RFC 3339),
//	    # checked against the relay's clock at AUTH time.
//	    previousPasswordHashes:
//	      - hash: "$mr-sha256$8xzz4bcdmZ4Z0w3s6cJ8Lw$8Y3vT0m8pGr6p3N8l3y1m6VvJp8gGzq1vH8bq9xj6Cs"
//	        notAfter: "2026-12-08T10:00:00Z"
//	    # Envelope and From: senders: a domain (any address at exactly that
//	    # domain) or one address. Each must be a listed domain or under one.
//	    allowedSenders: [example.com, noreply@shop.example.com]
//	    # 0 means unlimited.
//	    limits: {messagesPerMinute: 60, messagesPerDay: 10000, recipientsPerMessage: 50}
//	    suspended: false   # true: AUTH works, MAIL FROM gets 451 4.7.1
//
//	queue:
//	  directory: /var/spool/mailroom
//	  # Below this much free space mail is refused with 452 4.3.1 and the
//	  # relay reports not ready.
//	  minFreeSpace: 256Mi
//
//	# Used by the delivery side of the relay.
//	delivery:
//	  paused: false          # true: accept and queue, deliver nothing
//	  mode: Direct           # Direct (MX lookup) | Smarthost
//	  smarthost:
//	    host: ""
//	    port: 587
//	    # YAML file with "username:" and "password:"; empty: no AUTH.
//	    credentialsFile: ""
//	    tls: Required        # Required | Opportunistic | None (None only without credentials)
//	  retry:
//	    schedule: [1m, 5m, 15m, 30m, 1h]   # the last step repeats, jittered
//	    maxAge: 120h         # then a failure DSN to the sender
//	    delayWarningAfter: 4h   # one "delayed" DSN; 0s disables
//	  maxConnectionsPerDomain: 10
//	  resolvers: []          # "host" or "host:port"; empty: /etc/resolv.conf
//	  shutdownGrace: 20s     # on SIGTERM, after the sessions: deliveries may finish
//
//	# PROXY protocol v1/v2 behind a load balancer: connections from these
//	# sources must start with a PROXY header and the relay uses the client
//	# address it carries; a PROXY header from anywhere else closes the
//	# connection. Omitted: off.
//	proxyProtocol:
//	  trustedCIDRs: [10.0.0.0/8]
//
//	# The pool's internal path (mutual TLS, certificates from the pool CA)
//	# for handing a draining member's queue to the others. Omitted: off.
//	peer:
//	  caFile: /etc/mailroom/peer/ca.crt
//	  certFile: /etc/mailroom/peer/tls.crt
//	  keyFile: /etc/mailroom/peer/tls.key
//	  # every member's peer address (the headless Service names), self included
//	  addresses: ["relay-0.relay-peers.mail.svc:8443", "relay-1.relay-peers.mail.svc:8443"]
//	  self: relay-1        # default: $MAILROOM_POD_NAME (downward API)
//
//	# Members that must stop taking mail and hand their queue over.
//	drain: []             # e.g. [relay-1]
package config
