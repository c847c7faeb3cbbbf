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
// Sizes are Kubernetes quantities ("25Mi", "1Gi", or plain bytes) and
// durations are Go durations ("90s", "5m", "120h"), as in the CRDs.
//
// A complete file. hostname, the tls files and queue.directory are
// required; the trusted network, domain and credential are examples (the
// lists are empty by default); every other value shown is the default:
//
//	# Name used in the SMTP greeting, EHLO reply and Received: fields.
//	hostname: relay.example.com
//
//	listeners:
//	  submission: ":587"    # STARTTLS (RFC 3207); AUTH only after TLS
//	  submissions: ":465"   # implicit TLS (RFC 8314)
//	  http: ":8080"         # /metrics, /healthz, /readyz
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
//	  shutdownGrace: 25s         # on SIGTERM, how long sessions may finish
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
//	    # bcrypt or argon2id (PHC string); never the password itself.
//	    passwordHash: "$2a$10$px0zTPYlw26dgyZYlGwb4.ClsLZiSnEqx3vW/M/JRTtkIq2CMBrIi"
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
package config
